"""vagrant/ cannot boot here (no box downloads), so it is checked as far as this machine can."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_vagrantfile_validates(tmp_path):
    work = tmp_path / "vagrant"  # vagrant writes a .vagrant/ beside the file: not in the repo
    shutil.copytree(REPO / "vagrant", work)
    r = subprocess.run(["vagrant", "validate"], cwd=work, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "VAGRANT_HOME": str(tmp_path),
                                       "HOME": str(tmp_path)}, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout


def test_provisioning_runs_the_projects_test_command():
    script = REPO / "vagrant" / "provision.sh"
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "make test" in text and "unified_cgroup_hierarchy" in text
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme.split("\n\n", 3)[2]  # the command the README starts with


def test_make_target_drives_the_machines_the_vagrantfile_defines():
    machines = set(re.findall(r'config\.vm\.define "(\w+)"',
                              (REPO / "vagrant" / "Vagrantfile").read_text()))
    assert machines == {"v1", "v2"}
    makefile = (REPO / "Makefile").read_text()
    target = makefile.split("\nvagrant-test:\n", 1)[1].split("\n\n", 1)[0]
    for m in machines:
        assert f"vagrant up {m} --provision" in target and f"vagrant destroy -f {m}" in target
