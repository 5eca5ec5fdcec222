"""The Debian package as a hosting provider uses it, under a real systemd (PID 1).

`make deb-test` builds the package and runs this with TENANTFPM_DEB naming it; the
rest of the suite skips it. In one booted container (container.py), in order: install
with apt (the service starts and is enabled), add a tenant, serve a request through
nginx, `systemctl reload`, a logrotate run, `systemctl stop` with a request in flight
(it finishes), and removal (the service stops, the tenant's files and logs stay).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.package.container import Container

DEB = os.environ.get("TENANTFPM_DEB", "")

pytestmark = [
    pytest.mark.skipif(not DEB, reason="needs the built package: make deb-test"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None,
                       reason="needs systemd-nspawn (make deb-test installs it)"),
]

SITE = """\
name    = "shop"
profile = "basic"
user    = "shop"
root    = "/srv/tenants/shop"
domains = ["shop.test"]

[pm]
mode = "static"
max_children = 2
"""

CURL = "curl -sS --max-time 10 -H 'Host: shop.test' http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    c = Container()
    try:
        c.boot()
        c.put("/root/tenantfpm.deb", Path(DEB).read_bytes())
        yield c
    finally:
        c.close()


def test_package_lifecycle(box: Container) -> None:
    sh = box.sh
    # --- install: the unit starts and is enabled, the command is on PATH --------------
    sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
       "/root/tenantfpm.deb", timeout=300)
    assert sh("systemctl is-enabled tenantfpm").stdout.strip() == "enabled"
    assert sh("systemctl is-active tenantfpm").stdout.strip() == "active"
    assert sh("command -v tenantfpm").stdout.strip() == "/usr/bin/tenantfpm"
    assert sh("test -f /etc/tenantfpm/tenantfpm.toml && test -d /etc/tenantfpm/tenants.d "
              "&& echo ok").stdout.strip() == "ok"
    master = sh("systemctl show -P MainPID tenantfpm").stdout.strip()
    assert master != "0"

    # --- a tenant, behind nginx ---------------------------------------------------------
    sh("useradd --system --no-create-home --shell /usr/sbin/nologin shop && "
       "mkdir -p /srv/tenants/shop && chmod 755 /srv/tenants /srv/tenants/shop")
    box.put("/srv/tenants/shop/index.php", '<?php echo "hello from ", getmypid(), "\\n";')
    box.put("/srv/tenants/shop/sleep.php", '<?php sleep(3); echo "slept in full\\n";')
    box.put("/root/shop.toml", SITE)
    added = sh("tenantfpm add /root/shop.toml")
    assert "shop" in added.stdout
    assert "server {" in added.stdout
    # the server block as `add` printed it (`tenantfpm nginx` prints it again), on a port
    # of the test's: the site as an admin enables it
    sh("tenantfpm nginx shop --listen 127.0.0.1:8080 > /etc/nginx/sites-available/shop && "
       "ln -sf ../sites-available/shop /etc/nginx/sites-enabled/shop && "
       "rm -f /etc/nginx/sites-enabled/default && systemctl start nginx")
    first = sh(f"{CURL}/").stdout
    assert first.startswith("hello from ")
    # the tenant's cgroup is under the unit's (Delegate=yes): systemd sees its workers
    cgroup = sh("systemctl show -P ControlGroup tenantfpm").stdout.strip()
    tasks = sh(f"find /sys/fs/cgroup/pids{cgroup} -name cgroup.procs -path '*shop*' "
               "-exec cat {} +").stdout.split()
    assert len(tasks) >= 3, f"zygote and 2 workers expected under {cgroup}: {tasks}"
    # they came from the master's spawn server (a package that could not run it would
    # fork in the master instead, and its log would say so)
    assert sh(f"pgrep -P {master} -f tenantfpm.sandbox.spawner").stdout.strip()
    assert "spawn server" not in sh("cat /var/log/tenantfpm/master.log").stdout

    # --- the tenant's own user, without root: its status, logs and reload, no one else's -
    as_shop = "runuser -u shop -- tenantfpm"
    assert '"name": "shop"' in sh(f"{as_shop} status --json").stdout
    assert "[pool shop]" in sh(f"{as_shop} logs --grep 'ready|started' -n 5").stdout
    refused = sh(f"{as_shop} status other", check=False)
    assert refused.returncode == 1 and "its own tenant only" in refused.stderr
    assert sh("runuser -u nobody -- tenantfpm status", check=False).returncode == 1
    assert sh(f"{as_shop} reload").stdout.strip() == "tenant shop: running"

    # --- systemctl reload: new workers, the same master, still serving ------------------
    before = sh("tenantfpm status shop --json").stdout
    sh("systemctl reload tenantfpm")
    assert sh("systemctl show -P MainPID tenantfpm").stdout.strip() == master
    after = sh("tenantfpm status shop --json").stdout
    assert before != after
    assert sh(f"{CURL}/").stdout.startswith(
        "hello from ")
    assert sh("systemctl is-active tenantfpm").stdout.strip() == "active"

    # --- logrotate: the files move, the master writes into new ones ---------------------
    sh("logrotate -f /etc/logrotate.d/tenantfpm")
    assert sh("test -f /var/log/tenantfpm/master.log.1 && echo ok").stdout.strip() == "ok"
    deadline = time.monotonic() + 10
    while "log files reopened" not in sh("cat /var/log/tenantfpm/master.log",
                                         check=False).stdout:
        assert time.monotonic() < deadline, "the master did not reopen its log"
        time.sleep(0.2)
    sh("tenantfpm restart shop")
    assert "shop" in sh("cat /var/log/tenantfpm/shop/error.log").stdout

    # --- systemctl stop with a request in flight: it finishes ---------------------------
    sh(f"({CURL.replace('10', '20')}/sleep.php > /root/inflight.out 2>&1 &) ; sleep 1")
    sh("systemctl stop tenantfpm", timeout=60)
    assert sh("systemctl is-active tenantfpm", check=False).stdout.strip() == "inactive"
    deadline = time.monotonic() + 10
    while "slept" not in sh("cat /root/inflight.out", check=False).stdout:
        assert time.monotonic() < deadline, sh("cat /root/inflight.out", check=False).stdout
        time.sleep(0.2)
    assert sh("cat /root/inflight.out").stdout == "slept in full\n"
    sh("systemctl start tenantfpm")
    assert sh(f"{CURL}/").stdout.startswith(
        "hello from ")

    # --- removal: the service stops, the tenant's files and logs stay ------------------
    sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q tenantfpm", timeout=120)
    assert sh("systemctl is-active tenantfpm", check=False).stdout.strip() == "inactive"
    # (the pattern must not match this shell's own command line)
    assert sh("pgrep -f '^/opt/venvs/[t]enantfpm/bin/python'", check=False).returncode == 1
    assert sh("test -f /etc/tenantfpm/tenants.d/shop.toml && "
              "test -s /var/log/tenantfpm/shop/error.log && "
              "test -f /srv/tenants/shop/index.php && echo kept").stdout.strip() == "kept"
