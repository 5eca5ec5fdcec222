"""`make vm-test`: the integration tests named on the command line, inside a throwaway VM.

virtme-ng boots Debian's kernel (cgroup v2, unlike this host's v1) under
qemu over a read-only view of this machine's filesystem, with writable
overlays that vanish with the VM; tests/vm/inside.sh runs pytest there. No
KVM here (the CPU does not expose virtualisation to this VM), so the guest is
fully emulated and every wait in the tests is stretched (TENANTFPM_TEST_SLOWDOWN).
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SLOWDOWN = "25"
LIMIT = 25 * 60  # seconds for the whole VM run
# seconds for one test, its fixtures' set-up included (pytest-timeout): the slowest takes
# under a minute in the VM, and a hung one fails with its stacks while the others still run
TEST_LIMIT = 300


def kernel() -> str:
    found = sorted(glob.glob("/boot/vmlinuz-*-amd64"),
                   key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p)])
    if not found:
        raise SystemExit("no /boot/vmlinuz-*-amd64: `make vm-deps` installs linux-image-amd64")
    return found[-1]


def main() -> int:
    tests = sys.argv[1:] or ["tests/integration"]
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    with tempfile.TemporaryDirectory(prefix="tfpm-vm-") as out:
        result = Path(out, "rc")
        # no hypothesis plugin: the integration tests do not use it, and under emulation
        # pytest printed its first line 15-24 s after the boot without it, 37 s with it
        inner = (f"TENANTFPM_TEST_SLOWDOWN={SLOWDOWN} VM_RESULT={result} "
                 f"{REPO}/tests/vm/inside.sh {REPO} -v -p no:hypothesispytest "
                 f"--timeout={TEST_LIMIT} --durations=10 {' '.join(tests)}")
        cmd = ["vng", "--disable-kvm", "--run", kernel(), "--memory", "2G", "--cpus", "2",
               "--rwdir", out, "--exec", inner]
        print(f">> booting {os.path.basename(cmd[3])} under emulation (about 20 s), then "
              f"pytest {' '.join(tests)} inside; this takes minutes", flush=True)
        started = time.monotonic()
        # through a pipe: qemu reopens its stdout by path, which would truncate a log file
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        assert proc.stdout is not None
        # a silent hang ends too, qemu included (it runs a few processes below vng)
        watchdog = threading.Timer(LIMIT, os.killpg, (proc.pid, signal.SIGKILL))
        watchdog.start()
        try:
            for line in proc.stdout:  # each line with the time it came: a slow run shows where
                sys.stdout.buffer.write(b"[%4ds] " % (time.monotonic() - started) + line)
                sys.stdout.flush()
            proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)  # Ctrl-C: no VM left behind
            raise
        finally:
            watchdog.cancel()
        if time.monotonic() - started >= LIMIT:
            print(f">> the VM run took longer than {LIMIT // 60} minutes and was stopped")
            return 1
        took = time.monotonic() - started
        if not result.exists():
            print(f">> the VM ended after {took:.0f}s without a test result (see above)")
            return 1
        rc = int(result.read_text().strip() or 1)
        print(f">> VM run finished in {took:.0f}s: pytest exit code {rc}")
        return rc


if __name__ == "__main__":
    sys.exit(main())
