"""A real master with real php-cgi workers, driven through the CLI.

Each test gets its own master and directory tree; users are made once per
session. Everything is removed afterwards, even on failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tenantfpm.client import Client
from tenantfpm.errors import TenantFPMError
from tenantfpm.wire import fastcgi

BIN = str(Path(sys.executable).with_name("tenantfpm"))
# every wait is this many times longer: `make vm-test` runs under full emulation
SLOW = float(os.environ.get("TENANTFPM_TEST_SLOWDOWN", "1"))
USERS = ["tfpmt-a", "tfpmt-b", "tfpmt-c", "tfpmt-d", "tfpmt-e"]

PHP = {
    "index.php": '<?php printf("hello pid=%s uid=%d\\n", getenv("TENANTFPM_WORKER_PID"), '
                 'posix_getuid());',
    "sleep.php": '<?php usleep((int)($_GET["ms"] ?? 500) * 1000); '
                 'printf("slept pid=%s\\n", getenv("TENANTFPM_WORKER_PID"));',
    "crash.php": '<?php $a = []; $r = &$a; for ($i = 0; $i < 1000000; $i++) '
                 '{ $r[0] = []; $r = &$r[0]; } unset($r); echo strlen(serialize($a));',
    "stderr.php": '<?php file_put_contents("php://stderr", "note from php\\n"); echo "ok";',
}

# run a command without a shell; its exit code and output, for the escape attempts
PHP_HELPERS = """
function run(array $cmd): string {
    $p = proc_open($cmd, [1 => ["pipe", "w"], 2 => ["pipe", "w"]], $pipes);
    if (!is_resource($p)) { return "proc_open failed"; }
    $out = stream_get_contents($pipes[1]) . stream_get_contents($pipes[2]);
    return "rc=" . proc_close($p) . " " . trim($out);
}
"""

if os.geteuid() != 0:
    pytest.skip("integration tests need root", allow_module_level=True)


@pytest.fixture(scope="session")
def users():
    made = []
    for u in USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", u], check=True)
            made.append(u)
    yield USERS
    for u in USERS:
        subprocess.run(["pkill", "-KILL", "-u", u], check=False)
    for u in made:
        subprocess.run(["userdel", u], check=False)


class Env:
    def __init__(self, base: Path, extra_master: str = "") -> None:
        self.base = base
        self.config = base / "tenantfpm.toml"
        self.cgroup_parent = f"tenantfpm-test-{base.name}"
        self.config.write_text(textwrap.dedent(f"""
            [paths]
            tenants_dir = "{base}/tenants.d"
            profiles_dir = "{base}/profiles"
            run_dir = "{base}/run"
            log_dir = "{base}/log"
            state_dir = "{base}/lib"
            [master]
            log_file = "{base}/log/master.log"
            log_level = "debug"
            process_control_timeout = "3s"
            emergency_restart_threshold = 3
            emergency_restart_interval = "20s"
            cgroup_parent = "{self.cgroup_parent}"
        """) + extra_master + "\n")
        self.env = {**os.environ, "TENANTFPM_CONFIG": str(self.config)}
        self.master: subprocess.Popen[bytes] | None = None
        self.probes = 0

    def start_master(self) -> None:
        self.master = subprocess.Popen([BIN, "run"], env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sock = self.base / "run" / "control.sock"
        deadline = time.time() + 15 * SLOW
        while time.time() < deadline:
            if sock.exists():
                with contextlib.suppress(OSError, TenantFPMError):
                    self.api("GET", "/v1/tenants")
                    return
            if self.master.poll() is not None:
                raise RuntimeError(f"master died: {self.master.stderr.read().decode()}")
            time.sleep(0.05)
        raise RuntimeError("master did not come up")

    def stop_master(self) -> None:
        if self.master is None:
            return
        if self.master.poll() is None:
            self.master.send_signal(signal.SIGQUIT)
            try:
                self.master.wait(15 * SLOW)
            except subprocess.TimeoutExpired:
                self.master.kill()
                self.master.wait()
        self.master = None

    def cli(self, *args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([BIN, *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout * SLOW)
        if check and r.returncode != 0:
            raise AssertionError(f"tenantfpm {' '.join(args)} -> {r.returncode}\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def site(self, name: str, user: str, body: str = "", root: Path | None = None) -> Path:
        if root is None:
            root = self.base / "srv" / name
            root.mkdir(parents=True, exist_ok=True)
            for fname, code in PHP.items():
                (root / fname).write_text(code)
            for p in (self.base / "srv", root):
                p.chmod(0o755)
        path = self.base / f"{name}.toml"
        path.write_text(f'name = "{name}"\nuser = "{user}"\nroot = "{root}"\n'
                        + textwrap.dedent(body))
        return path

    def python_site(self, name: str, user: str, app: str, body: str = "") -> Path:
        """A python tenant (static, one worker) whose app.py is `app`, in a root its own
        user owns (its code may write there), plus `body` for its site file."""
        root = self.base / "srv" / name
        root.mkdir(parents=True)
        (root / "app.py").write_text(app)
        uid = pwd.getpwnam(user).pw_uid
        os.chown(root, uid, uid)
        return self.site(name, user, """
            [runtime]
            type = "python"
            app = "app:application"
            [pm]
            mode = "static"
            max_children = 1
        """ + textwrap.dedent(body), root=root)

    def socket(self, name: str) -> str:
        return str(self.base / "run" / f"{name}.sock")

    def request(self, name: str, uri: str, timeout: float = 20) -> fastcgi.Response:
        root = str(self.base / "srv" / name)
        return fastcgi.request(self.socket(name), fastcgi.cgi_params(root, uri),
                               timeout=timeout * SLOW)

    def status(self, name: str) -> dict:
        return self.api("GET", f"/v1/tenants/{name}/status?full=1")

    def log(self, name: str) -> str:
        p = self.base / "log" / name / "error.log"
        return p.read_text() if p.exists() else ""

    def wait_for(self, what: str, predicate, timeout: float = 15.0, interval: float = 0.1):
        deadline = time.time() + timeout * SLOW
        last = None
        while time.time() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    def api(self, method: str, url: str, body: dict | None = None):
        """The control API in-process: what the CLI does, without a Python start per call
        (seconds each in the emulated VM of `make vm-test`)."""
        return Client(str(self.base / "run" / "control.sock"), timeout=120 * SLOW).call(
            method, url, body)

    def add(self, site: Path, replace: bool = False) -> dict:
        return self.api("POST", "/v1/tenants", {"path": str(site), "replace": replace})

    def php(self, name: str, code: str, timeout: float = 30) -> fastcgi.Response:
        """Run `code` as tenant `name`'s PHP, through its socket, in its sandbox."""
        self.probes += 1
        script = self.base / "srv" / name / f"probe{self.probes}.php"
        script.write_text("<?php\n" + PHP_HELPERS + textwrap.dedent(code))
        return self.request(name, f"/{script.name}", timeout=timeout)

    def load(self, name: str, uri: str, n: int, concurrency: int) -> list[fastcgi.Response]:
        with ThreadPoolExecutor(concurrency) as ex:
            return list(ex.map(lambda _: self.request(name, uri), range(n)))


# the masters running now, for the failure report below
LIVE: list[Env] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the tail of each running master's log: what the
    master did when a wait ran out (a hang in the VM leaves nothing else behind)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for e in LIVE:
            log = e.base / "log" / "master.log"
            tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
            report.sections.append((f"master.log of {e.base} (last 40 lines)", "\n".join(tail)))


@contextlib.contextmanager
def running_env(extra_master: str = "") -> Iterator[Env]:
    """A master in its own directory tree and cgroup parent; all of it gone afterwards."""
    base = Path(tempfile.mkdtemp(prefix="tfpm-", dir="/tmp"))
    base.chmod(0o755)
    e = Env(base, extra_master)
    clean_exit = False
    LIVE.append(e)
    try:
        e.start_master()
        yield e
        clean_exit = e.master is None or e.master.poll() is None
    finally:
        LIVE.remove(e)
        e.stop_master()
        for u in USERS:
            subprocess.run(["pkill", "-KILL", "-u", u], check=False)
        left = remove_cgroups(e.cgroup_parent)
        shutil.rmtree(base, ignore_errors=True)
    assert not (clean_exit and left), f"the master left cgroups behind: {left}"


@pytest.fixture
def env(users):
    with running_env() as e:
        yield e


def terminate(proc: subprocess.Popen) -> None:
    """A server a test started: SIGTERM, then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def remove_cgroups(parent: str) -> list[str]:
    """Whatever a test's master left under its cgroup parent, killed and removed."""
    found = sorted(glob.glob(f"/sys/fs/cgroup/*/{parent}") + glob.glob(f"/sys/fs/cgroup/{parent}"))
    for top in found:
        for d in sorted((p for p, _, _ in os.walk(top)), key=len, reverse=True):
            procs = Path(d, "cgroup.procs")
            for _ in range(50):
                pids = procs.read_text().split() if procs.exists() else []
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                os.rmdir(d)
    return found


def as_user(name: str) -> dict:
    """subprocess's arguments to run as that user, with its group and no other (a plain
    user= keeps root's group)."""
    pw = pwd.getpwnam(name)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body_ok(r: fastcgi.Response) -> bool:
    return r.complete and r.status == 200
