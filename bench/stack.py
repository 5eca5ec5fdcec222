"""The services a benchmark run needs, side by side: php-fpm, a tenantfpm master, nginx.

Same PHP (php8.2), same php.ini (the distribution's cgi php.ini for both),
same worker counts, opcache on in both; nginx in front of each with the same
location block. Everything lives in one temporary directory, and the users,
processes and cgroups it makes are gone when the `Stack` context ends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tenantfpm import cgroups
from tenantfpm.cgroups import base as cgroup_files
from tenantfpm.cgroups import favor
from tenantfpm.client import Client

PHP_INI = "/etc/php/8.2/fpm/php.ini"  # what a php tenant starts from too (runtimes/php.py)
FPM = "/usr/sbin/php-fpm8.2"
TFPM = str(Path(sys.executable).with_name("tenantfpm"))
USERS = ["tfpmbench1", "tfpmbench2", "tfpmbench3", "tfpmbench4", "tfpmbench5",
         "tfpmbench6", "tfpmbench7", "tfpmbench8"]  # one per tenantfpm pool (POOLS), then:
WSGI_USER, WORDPRESS_USER = USERS[6], USERS[7]
FPM_USER = USERS[0]  # php-fpm runs all its pools as this one
INCLUDES = 300

PAGES = {
    "hello.php": '<?php echo "hello";',
    # about 5 ms of PHP work on this machine: string and array churn, no I/O
    "cpu.php": '<?php $a = []; for ($i = 0; $i < 8000; $i++) { $a[] = md5((string)$i); } '
               'sort($a); echo count($a);',
    "include.php": f"<?php for ($i = 0; $i < {INCLUDES}; $i++) "
                   f"{{ include __DIR__ . \"/inc/f$i.php\"; }} echo f{INCLUDES - 1}();",
    "sleep.php": '<?php usleep((int)($_GET["ms"] ?? 100) * 1000); echo "slept";',
}

# name -> (backend, pm, sandbox): the pools each side runs
POOLS = {  # name: (which sides, pm, sandboxed, max_requests)
    "static": ("both", "static", True, 0),
    "recycle": ("both", "static", True, 500),
    "ondemand": ("both", "ondemand", True, 0),
    "ondemand-nosandbox": ("tenantfpm", "ondemand", False, 0),
    "ondemand-cold": ("tenantfpm", "ondemand", True, 0),  # its zygote retires after 1 s
    "dynamic": ("both", "dynamic", True, 0),
}


def nginx_config(base: Path, servers: list[str]) -> str:
    """A foreground nginx keeping everything under `base`, serving the given server blocks."""
    return f"""
worker_processes 1;
daemon off;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {base}/nginx-body;
    fastcgi_temp_path {base}/nginx-fastcgi;
    proxy_temp_path {base}/nginx-proxy;
    uwsgi_temp_path {base}/nginx-uwsgi;
    scgi_temp_path {base}/nginx-scgi;
    {''.join(servers)}
}}
"""


def stop_all(procs: list[subprocess.Popen], sig=lambda p: signal.SIGTERM) -> None:
    """Signal every process still running (last started first), then wait; SIGKILL at 20 s."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(sig(p))
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, workers: int, log=print, access_log: bool = False,
                 tcp: bool = False) -> None:
        self.workers = workers
        self.log = log
        self.access_log = access_log  # both sides write one, each its own way
        self.tcp = tcp  # both sides listen on 127.0.0.1 instead of unix sockets
        self.tcp_ports: dict[tuple[str, str], int] = {}
        self.base = Path(tempfile.mkdtemp(prefix="tfpm-bench-"))
        self.base.chmod(0o755)
        self.www = self.base / "www"
        self.made_users: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.ports: dict[tuple[str, str], int] = {}  # (side, pool) -> nginx port
        self.fpm: subprocess.Popen | None = None
        self.master: subprocess.Popen | None = None
        self.cgroup_parent = f"tenantfpm-bench-{self.base.name}"
        # the master is told to set favordynmods (as a provider would); put back afterwards
        self.cgroup2 = favor.current()

    # --- setup ----------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self._users()
            self._docroot()
            self._start_fpm()
            self._start_tenantfpm()
            self._start_nginx()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _users(self) -> None:
        for u in USERS:
            try:
                pwd.getpwnam(u)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", u], check=True)
                self.made_users.append(u)

    def docroot(self, pool: str) -> Path:
        """The pool's files: the same pages for every pool, in a root of its own (no two
        tenants may share a root), served at the same path to php-fpm's pool."""
        return self.www / pool

    def _docroot(self) -> None:
        self.www.mkdir()
        self.www.chmod(0o755)
        for pool in POOLS:
            root = self.docroot(pool)
            (root / "inc").mkdir(parents=True)
            for name, code in PAGES.items():
                (root / name).write_text(code)
            for i in range(INCLUDES):
                (root / "inc" / f"f{i}.php").write_text(
                    f"<?php function f{i}() {{ return {i} * 2 + strlen('{'x' * 40}'); }}\n")
            for p in [root, root / "inc"]:
                p.chmod(0o755)

    def _start_fpm(self) -> None:
        w = self.workers
        pools = []
        for name, (backend, mode, _, max_requests) in POOLS.items():
            if backend != "both":
                continue
            extra = {"static": "",
                     "ondemand": "pm.process_idle_timeout = 1s\n",
                     "dynamic": f"pm.start_servers = 1\npm.min_spare_servers = 1\n"
                                f"pm.max_spare_servers = {max(1, w // 2)}\n"}[mode]
            pools.append(f"[{name}]\nuser = {FPM_USER}\ngroup = {FPM_USER}\n"
                         f"listen = {self.socket_of('fpm', name)}\nlisten.mode = 0666\n"
                         f"pm = {mode}\npm.max_children = {w}\npm.max_requests = {max_requests}\n"
                         + (f"access.log = {self.base}/fpm-{name}-access.log\n"
                            if self.access_log else "") + extra)
        conf = self.base / "php-fpm.conf"
        conf.write_text(f"[global]\npid = {self.base}/fpm.pid\nerror_log = {self.base}/fpm.log\n"
                        "daemonize = no\nprocess_control_timeout = 0\n\n" + "\n".join(pools))
        self.fpm_conf = conf
        self.fpm = self._spawn([FPM, "-c", PHP_INI, "--fpm-config", str(conf), "--nodaemonize"])
        self.wait_for(lambda: all(self._listening(self.socket_of("fpm", n))
                                  for n, v in POOLS.items() if v[0] == "both"), "php-fpm")

    def _start_tenantfpm(self) -> None:
        conf = self.base / "tenantfpm.toml"
        conf.write_text(f'[paths]\ntenants_dir = "{self.base}/tenants.d"\n'
                        f'profiles_dir = "{self.base}/profiles"\nrun_dir = "{self.base}/run"\n'
                        f'log_dir = "{self.base}/log"\nstate_dir = "{self.base}/lib"\n'
                        f'[master]\ncgroup_parent = "{self.cgroup_parent}"\n'
                        'process_control_timeout = "10s"\ncgroup_favordynmods = true\n')
        self.tfpm_env = {**os.environ, "TENANTFPM_CONFIG": str(conf)}
        self.master = self._spawn([TFPM, "run"], env=self.tfpm_env)
        self.client = Client(str(self.base / "run" / "control.sock"), timeout=120)
        self.wait_for(lambda: self._answers(), "the tenantfpm master")
        for i, (name, (_, mode, sandbox, max_requests)) in enumerate(POOLS.items()):
            site = self.base / f"{name}.toml"
            extra = {"static": "", "ondemand": 'process_idle_timeout = "1s"\n' + (
                         'zygote_idle_timeout = "1s"\n' if name == "ondemand-cold" else ""),
                     "dynamic": f"start_servers = 1\nmin_spare_servers = 1\n"
                                f"max_spare_servers = {max(1, self.workers // 2)}\n"}[mode]
            # nginx's workers run as nobody here: the socket is theirs, not everyone's
            listen = (f'[listen]\naddress = "{self.socket_of("tenantfpm", name)}"\n'
                      if self.tcp else
                      '[listen]\nowner = "nobody"\ngroup = "nogroup"\nmode = "0660"\n')
            site.write_text(f'name = "{name}"\nuser = "{USERS[i]}"\n'
                            f'root = "{self.docroot(name)}"\n' + listen +
                            f'[pm]\nmode = "{mode}"\nmax_children = {self.workers}\n'
                            f"max_requests = {max_requests}\n{extra}"
                            f"[isolation]\nenabled = {'true' if sandbox else 'false'}\n"
                            + ("[log]\naccess = true\n" if self.access_log else ""))
            self.client.call("POST", "/v1/tenants", {"path": str(site), "replace": False})

    def _answers(self) -> bool:
        try:
            self.client.call("GET", "/v1/tenants")
            return True
        except Exception:
            return False

    def socket_of(self, side: str, pool: str) -> str:
        if self.tcp:
            port = self.tcp_ports.setdefault((side, pool), free_port())
            return f"127.0.0.1:{port}"
        if side == "fpm":
            return str(self.base / f"fpm-{pool}.sock")
        return str(self.base / "run" / f"{pool}.sock")

    @staticmethod
    def _listening(address: str) -> bool:
        if address.startswith("/"):
            return os.path.exists(address)
        return Stack.port_open(int(address.rsplit(":", 1)[1]))

    def _start_nginx(self) -> None:
        servers = []
        for pool, (backend, *_) in POOLS.items():
            for side in ("fpm", "tenantfpm"):
                if side == "fpm" and backend != "both":
                    continue
                port = free_port()
                self.ports[(side, pool)] = port
                servers.append(f"""
    server {{
        listen 127.0.0.1:{port};
        root {self.docroot(pool)};
        location ~ \\.php$ {{
            fastcgi_pass {"" if self.tcp else "unix:"}{self.socket_of(side, pool)};
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        }}
    }}""")
        conf = self.base / "nginx.conf"
        conf.write_text(nginx_config(self.base, servers))
        self.nginx = self._spawn(["nginx", "-c", str(conf), "-p", str(self.base)])
        self.wait_for(lambda: all(self.port_open(p) for p in self.ports.values()), "nginx")

    @staticmethod
    def port_open(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _spawn(self, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        with open(self.base / f"{Path(argv[0]).name}.err", "w") as err:
            p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        self.procs.append(p)
        return p

    def wait_for(self, ready, what: str, timeout: float = 30) -> None:
        self.log(f"   waiting for {what}")
        deadline = time.time() + timeout
        while not ready():
            for p in self.procs:
                if p.poll() is not None:
                    err = self.base / f"{Path(p.args[0]).name}.err"
                    raise RuntimeError(f"{p.args[0]} exited: {err.read_text()}")
            if time.time() > deadline:
                raise RuntimeError(f"{what} did not come up within {timeout:g}s")
            time.sleep(0.05)

    # --- during a run -----------------------------------------------------

    def url(self, side: str, pool: str, page: str) -> str:
        return f"http://127.0.0.1:{self.ports[(side, pool)]}/{page}"

    def status(self, pool: str) -> dict:
        return self.client.call("GET", f"/v1/tenants/{pool}/status?full=1")

    def wait_for_no_zygote(self, pool: str) -> None:
        self.wait_for(lambda: self.status(pool)["zygote_pid"] is None,
                      f"{pool}'s zygote to retire")

    def fpm_children(self, pool: str) -> list[int]:
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].strip()
                if cmd == f"php-fpm: pool {pool}".encode():
                    out.append(int(pid))
        return out

    @contextlib.contextmanager
    def fpm_grouped(self, pool: str) -> Iterator[list[int]]:
        """FPM's `pool` workers, while inside, in a pair of cgroups like a tenant's: a
        parent weighing what tenantfpm's tenants' parent weighs, the pool weighing its
        max_children, as tenantfpm's master sets them. That is PHP-FPM on a host that
        gives each pool a CPU group of its own (as CloudLinux's LVE does for each user):
        the price of that isolation, measured on FPM. Back where they were afterwards."""
        ours = cgroups.detect(self.cgroup_parent)
        if isinstance(ours, cgroups.V1Driver):
            shares = os.path.join(ours.mounts.get("cpu", "/nonexistent"), ours.parent,
                                  "cpu.shares")
            processes = (cgroup_files.read_int(shares) or 1024) // 1024
        else:
            processes = (cgroup_files.read_int(os.path.join(
                ours.parent_path, "cpu.weight")) or 100) // 100
        assert self.fpm is not None
        home = cgroup_homes(ours, self.fpm.pid)  # where FPM's master (and so they) live
        driver = cgroups.detect(self.cgroup_parent + "-fpm")
        group = driver.tenant(pool)
        kids = self.fpm_children(pool)
        try:
            group.create()
            group.apply(cgroups.Limits(weight=self.workers))
            driver.set_parent_weight(processes)
            for pid in kids:
                for f in group.join_files():
                    cgroup_files.write(f, str(pid))
            yield kids
        finally:
            for pid in kids:
                for f in home:
                    with contextlib.suppress(OSError):
                        cgroup_files.write(f, str(pid))
            with contextlib.suppress(OSError):  # else __exit__ tries again
                group.remove()
            driver.cleanup()

    def workers_pss(self, side: str, pool: str) -> list[int]:
        """PSS (kB) of each of `pool`'s workers on `side` (those that are still there)."""
        pids = (self.fpm_children(pool) if side == "fpm"
                else [p["pid"] for p in self.status(pool)["processes"]])
        return [x for x in (pss_kb(p) for p in pids) if x is not None]

    def reload_fpm(self) -> None:
        assert self.fpm is not None
        os.kill(int((self.base / "fpm.pid").read_text()), signal.SIGUSR2)

    def reload_tenantfpm(self, pool: str) -> None:
        self.client.call("POST", f"/v1/tenants/{pool}/reload")

    def set_file_cache(self, on: bool) -> None:
        """opcache.file_cache for both static pools (FPM reloads, the tenant is replaced)."""
        root = self.docroot("static")
        fpm_dir, t_dir = root / ".opcache-fpm", root / ".opcache-tfpm"
        for d in (fpm_dir, t_dir):
            d.mkdir(exist_ok=True)
            shutil.chown(d, FPM_USER)
        text = re.sub(r"php_admin_value\[opcache.file_cache\] = .*\n", "",
                      self.fpm_conf.read_text())
        if on:
            text = text.replace("[static]\n", f"[static]\nphp_admin_value[opcache.file_cache] = "
                                              f"{fpm_dir}\n")
        self.fpm_conf.write_text(text)
        self.reload_fpm()
        site = self.base / "static.toml"
        body = re.sub(r"\n\[ini\]\n.*", "", site.read_text(), flags=re.S)
        if on:
            body += f'\n[ini]\n"opcache.file_cache" = "{t_dir}"\n'
        site.write_text(body)
        self.client.call("POST", "/v1/tenants", {"path": str(site), "replace": True})
        self.wait_for(lambda: len(self.fpm_children("static")) == self.workers,
                      "php-fpm's static pool after the reload")

    def fpm_with_pools(self, n: int) -> int:
        """RSS (kB) of a php-fpm master holding n ondemand pools, idle."""
        d = self.base / "fpm-many"
        d.mkdir()
        pools = "".join(f"[p{i}]\nuser = {FPM_USER}\ngroup = {FPM_USER}\n"
                        f"listen = {d}/p{i}.sock\npm = ondemand\npm.max_children = 2\n\n"
                        for i in range(n))
        conf = d / "php-fpm.conf"
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # a socket per pool, and more
        conf.write_text(f"[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\n"
                        f"daemonize = no\nrlimit_files = {files}\n\n{pools}")
        p = self._spawn([FPM, "-c", PHP_INI, "--fpm-config", str(conf), "--nodaemonize"])
        try:
            self.wait_for(lambda: (d / f"p{n - 1}.sock").exists(), f"php-fpm with {n} pools",
                          timeout=120)
            time.sleep(2)
            return rss_kb(p.pid)
        finally:
            p.terminate()
            p.wait(30)
            self.procs.remove(p)

    def set_fpm_control_timeout(self, seconds: int) -> None:
        text = self.fpm_conf.read_text()
        self.fpm_conf.write_text(re.sub(r"process_control_timeout = \d+",
                                        f"process_control_timeout = {seconds}", text))
        self.reload_fpm()
        time.sleep(2)

    # --- teardown -------------------------------------------------------

    def __exit__(self, *exc: object) -> None:
        stop_all(self.procs, lambda p: signal.SIGQUIT if p is self.master else signal.SIGTERM)
        for u in USERS:
            subprocess.run(["pkill", "-KILL", "-u", u], check=False)
        for u in self.made_users:
            subprocess.run(["userdel", u], check=False)
        # the tenants' parent, and fpm_grouped's (-fpm) if it was left behind
        for d in sorted(Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}*/*")) + sorted(
                Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}*")):
            with contextlib.suppress(OSError):
                d.rmdir()
        shutil.rmtree(self.base, ignore_errors=True)
        if self.cgroup2 is not None:
            with contextlib.suppress(OSError):
                favor.restore(self.cgroup2)


def cgroup_homes(driver: cgroups.Driver, pid: int) -> list[str]:
    """The cgroup.procs files of `pid`'s cgroups in the hierarchies `driver` uses."""
    lines = [ln.split(":", 2) for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    if isinstance(driver, cgroups.V1Driver):
        return [os.path.join(mount, path.lstrip("/"), "cgroup.procs")
                for controller, mount in driver.mounts.items()
                for _, names, path in lines if controller in names.split(",")]
    assert isinstance(driver, cgroups.V2Driver)
    return [os.path.join(driver.mount, path.lstrip("/"), "cgroup.procs")
            for hid, _, path in lines if hid == "0"]


def pss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_pss_kb(pid: int) -> int | None:
    """PSS (kB) of a process and its children: a zygote and its spare, which share pages
    (each one's PSS alone would be a part of their cost)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    parts = [pss_kb(p) for p in (pid, *map(int, kids))]
    return sum(x for x in parts if x is not None) if parts[0] is not None else None


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")
