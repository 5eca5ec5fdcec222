"""A throwaway Debian 12 with systemd as PID 1, for testing the package as a service.

The machine's own root filesystem is the lower layer of an overlay whose upper layer is
a tmpfs: the container starts from the packages this machine has (the project's
Makefile installed them) and nothing it writes reaches the machine. systemd-nspawn
boots it with its own network namespace (loopback only), so its nginx, its tenants and
the firewall table the master adds stay inside it.

Everything is removed on close, even after a failure: the container is powered off
(then killed), the overlay and tmpfs unmounted, and the cgroups its systemd made are
removed: nspawn runs in a cgroup of its own in every hierarchy, made here for the
purpose, so what the container leaves is found under it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.procs import children_of

CGROUP_NAME = "tenantfpm-package-test"
BOOT_TIMEOUT = 60.0


def cgroup_hierarchies() -> list[str]:
    """Mount points of every cgroup hierarchy of this machine (v1 controllers, v2)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split()[0] if right else ""
            if fstype in ("cgroup", "cgroup2"):
                out.append(left.split()[4])
    return out


def _remove_tree(path: str) -> None:
    """rmdir a cgroup tree deepest first (cgroupfs refuses rm -r)."""
    for root, dirs, _ in os.walk(path, topdown=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, d))
    with contextlib.suppress(OSError):
        os.rmdir(path)


class Container:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="tfpm-nspawn-"))
        self.upper = self.base / "upper"
        self.root = self.base / "root"
        self.cgroups = [os.path.join(h, CGROUP_NAME) for h in cgroup_hierarchies()]
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.console = self.base / "console.log"

    # --- lifecycle -------------------------------------------------------------------

    def boot(self) -> None:
        self.upper.mkdir()
        self.root.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tfpm-nspawn", str(self.upper)],
                       check=True)
        (self.upper / "u").mkdir()
        (self.upper / "w").mkdir()
        subprocess.run(["mount", "-t", "overlay", "tfpm-nspawn-root", "-o",
                        f"lowerdir=/,upperdir={self.upper}/u,workdir={self.upper}/w",
                        str(self.root)], check=True)
        # a machine id of its own (journald refuses to share the host's) and no service of
        # the machine's (nginx, php-fpm, databases...) started by the boot: basic.target only
        (self.root / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
        # a root made for containers may carry Docker's policy-rc.d (exit 101), which
        # stops apt from starting any service; this container is a machine that boots
        # its services, as the provider's is (removed from the overlay only)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "usr" / "sbin" / "policy-rc.d").unlink()
        for c in self.cgroups:
            os.makedirs(c, exist_ok=True)
        console = open(self.console, "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--directory", str(self.root), "--register=no",
             "--keep-unit", "--private-network", "--boot", "--", "--unit=basic.target"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            preexec_fn=self._join_cgroups)
        console.close()
        self._wait_running()
        # nspawn mounts a v1 host's controller hierarchies read-only in the container (it
        # cannot know a delegated service is coming); a host systemd would have them
        # writable for its services, which is what the package is tested against
        # writable for its services, which is what the package is tested against; systemd
        # looks at its hierarchies again when it re-executes itself
        self.sh("for c in cpu cpuacct memory pids; do [ -d /sys/fs/cgroup/$c ] && "
                "mount -o remount,bind,rw /sys/fs/cgroup/$c || true; done; "
                "systemctl daemon-reexec")

    def _join_cgroups(self) -> None:
        for c in self.cgroups:
            with contextlib.suppress(OSError), open(os.path.join(c, "cgroup.procs"), "w") as f:
                f.write("0")

    def _wait_running(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the container exited while booting:\n{self.log()}")
            self.leader = self._find_leader()
            if self.leader:
                r = self.sh("systemctl is-system-running --wait", check=False, timeout=30)
                if r.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the container did not boot in {BOOT_TIMEOUT:.0f} s:\n{self.log()}")

    def _find_leader(self) -> int:
        """The container's PID 1, as the machine sees it: nspawn's child's child."""
        assert self.proc is not None
        for pid in children_of(self.proc.pid):
            for inner in [pid, *children_of(pid)]:
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{inner}/comm").read_text().strip() == "systemd":
                        return inner
        return 0

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to halt
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for c in self.cgroups:  # anything still alive in the container's cgroups
            with contextlib.suppress(OSError):
                for pid in Path(c, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for target in (self.root, self.upper):
            subprocess.run(["umount", "-R", str(target)], check=False,
                           stderr=subprocess.DEVNULL)
        for c in self.cgroups:
            for _ in range(50):
                _remove_tree(c)
                if not os.path.exists(c):
                    break
                time.sleep(0.1)
        shutil.rmtree(self.base, ignore_errors=True)

    # --- inside ------------------------------------------------------------------------

    def sh(self, script: str, check: bool = True, timeout: float = 120,
           ) -> subprocess.CompletedProcess[str]:
        """A shell command inside the container (all its namespaces, its root)."""
        r = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", script],
                           capture_output=True, text=True, timeout=timeout,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        if check and r.returncode != 0:
            raise AssertionError(f"in the container: {script}\nexit {r.returncode}\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def put(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """A file into the container's root (through the overlay's merged view)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.console.read_text(errors="replace")[-4000:]
        return ""
