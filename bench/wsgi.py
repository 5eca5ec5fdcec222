"""Scenario 7: one hello-world WSGI app behind nginx, served three ways.

tenantfpm's python runtime (sandboxed, as a hosting provider runs it), uWSGI
in FastCGI mode and flup's prefork FastCGI server, both from PyPI: the same
app file, the same interpreter (the one running this benchmark), the same
number of worker processes, the same nginx location block. The sides
alternate in every round, like FPM and tenantfpm in the PHP scenarios.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import wrk
from stack import free_port, nginx_config, stop_all

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
'''
FLUP_SERVER = Path(__file__).with_name("flup_server.py")
SIDES = ("tenantfpm", "uwsgi", "flup")


def _interpreter_binds() -> str:
    """[isolation] binds that make this interpreter (a virtualenv or pyenv build outside
    /usr) visible in the sandbox, read-only, at its own path."""
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    dirs = {d for d in dirs if not d.startswith("/usr/")}
    return "".join(f'  {{ source = "{d}", target = "{d}" }},\n' for d in sorted(dirs))


class WsgiStack:
    def __init__(self, st, workers: int, user: str, log=print) -> None:
        self.st = st
        self.workers = workers
        self.user = pwd.getpwnam(user)
        self.log = log
        self.base = st.base / "wsgi"
        self.ports: dict[str, int] = {}
        self.procs: list[subprocess.Popen] = []
        self.added = False

    def sock(self, side: str) -> str:
        if side == "tenantfpm":
            return self.st.socket_of("tenantfpm", "wsgi")
        return str(self.base / f"{side}.sock")

    def url(self, side: str) -> str:
        return f"http://127.0.0.1:{self.ports[side]}/"

    def __enter__(self) -> WsgiStack:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        self.base.mkdir()
        (self.base / "wsgiapp.py").write_text(APP)
        shutil.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        site = self.st.base / "wsgi.toml"
        site.write_text(f'name = "wsgi"\nuser = "{self.user.pw_name}"\nroot = "{self.base}"\n'
                        f'[listen]\nowner = "nobody"\ngroup = "nogroup"\nmode = "0660"\n'
                        f'[runtime]\ntype = "python"\ncommand = ["{sys.executable}"]\n'
                        f'app = "wsgiapp:application"\n'
                        f'[pm]\nmode = "static"\nmax_children = {self.workers}\n'
                        f"max_requests = 0\n[isolation]\nbinds = [\n{_interpreter_binds()}]\n")
        self.st.client.call("POST", "/v1/tenants", {"path": str(site), "replace": False})
        self.added = True
        # uWSGI and flup run as root: the interpreter may live where the tenant's user may
        # not go (a pyenv build under /root); the request path does not depend on the uid
        as_user = {"cwd": self.base}
        uwsgi = str(Path(sys.executable).with_name("uwsgi"))
        self._spawn([uwsgi, "--fastcgi-socket", self.sock("uwsgi"), "--chmod-socket=666",
                     "--master", "--processes", str(self.workers), "--wsgi-file",
                     str(self.base / "wsgiapp.py"), "--callable", "application",
                     "--disable-logging", "--die-on-term", "--need-app"], **as_user)
        flup = importlib.util.find_spec("flup")
        assert flup is not None and flup.submodule_search_locations
        self._spawn([sys.executable, str(FLUP_SERVER), self.sock("flup"), str(self.workers),
                     str(self.base)], **as_user)
        self._start_nginx()

    def _spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        err = open(self.base / f"{Path(argv[0]).name}-{len(self.procs)}.err", "w")  # noqa: SIM115
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, **kw)
        err.close()
        self.procs.append(p)
        return p

    def _start_nginx(self) -> None:
        servers = []
        for side in SIDES:
            self.ports[side] = free_port()
            servers.append(f"""
    server {{
        listen 127.0.0.1:{self.ports[side]};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_NAME "";
            fastcgi_param PATH_INFO $uri;
            fastcgi_pass unix:{self.sock(side)};
        }}
    }}""")
        conf = self.base / "nginx.conf"
        conf.write_text(nginx_config(self.base, servers))
        self._spawn(["nginx", "-c", str(conf), "-p", str(self.base)])
        self.log("   waiting for uWSGI, flup and nginx to answer")
        deadline = time.time() + 60
        while not all(self._answers(s) for s in SIDES):
            for p in self.procs:
                if p.poll() is not None:
                    errs = "".join(f.read_text() for f in self.base.glob("*.err"))
                    raise RuntimeError(f"{p.args[0]} exited: {errs[-2000:]}")
            if time.time() > deadline:
                raise RuntimeError("the WSGI servers did not answer within 60 s")
            time.sleep(0.2)

    def _answers(self, side: str) -> bool:
        try:
            with urllib.request.urlopen(self.url(side), timeout=5) as r:
                return r.read() == b"hello"
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        stop_all(self.procs)
        if self.added:
            self.st.client.call("DELETE", "/v1/tenants/wsgi")


def run(st, cfg: dict, user: str, log=print) -> dict:
    """req/s and latency per side; ratios are taken in the report."""
    log(f"7. WSGI hello world: tenantfpm vs uWSGI vs flup, {cfg['rounds']} rounds x "
        f"{cfg['seconds']}s per side")
    with WsgiStack(st, cfg["workers"], user, log) as ws:
        for side in SIDES:
            wrk.run(ws.url(side), 1, cfg["connections"])
        runs: dict[str, list[wrk.WrkResult]] = {s: [] for s in SIDES}
        for r in range(cfg["rounds"]):
            order = SIDES[r % 3:] + SIDES[:r % 3]
            for side in order:
                runs[side].append(wrk.run(ws.url(side), cfg["seconds"], cfg["connections"]))
    return {side: wrk.summarize(rs) for side, rs in runs.items()}
