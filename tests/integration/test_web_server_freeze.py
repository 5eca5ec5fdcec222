"""The second red team's attack 3 (issue 36), end to end: a tenant freezes the nginx worker
in front of it, and so every site that worker serves, by sending over its own FastCGI
connection a socket whose last close() blocks (SO_LINGER, and a send queue that cannot
drain). nginx reads its upstream with recv(), which drops passed descriptors: the close
happens in nginx.

A python tenant's request tries it, since it holds its connection itself: with a socket
it makes (SO_LINGER) and with one a local user made outside the sandbox and hands over a
unix socket in the site's directory. Neither can reach a tenant's process any more (the
seccomp filter refuses SO_LINGER), nor can any descriptor leave over the FastCGI
connection (descriptors pass on the zygote's channel to the master only:
sandbox/seccomp.py), and another site behind the same nginx worker keeps answering.
"""

from __future__ import annotations

import array
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.conftest import SLOW, terminate
from tests.integration.test_descriptors import LINGER
from tests.integration.test_web_servers import free_port, nginx_conf, wait_port
from tests.test_fdguard import lingering_carrier

APP = LINGER + r'''
import json

HERE = os.path.dirname(os.path.abspath(__file__))
KEPT = []  # kept for the worker's life: a lingering close waits on them


def _err(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def connection():
    """This request's FastCGI connection to the web server (a connected unix stream)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if s.family == socket.AF_UNIX and s.type == socket.SOCK_STREAM:
            try:
                s.getpeername()
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0:
                    return s
            except OSError:
                pass
        s.close()
    return None


def from_outside(report):
    """The socket a local user made outside the sandbox, if it can be taken in."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(HERE, "hand.sock"))
    KEPT.append(s)  # a refused message stays queued: its release here would block us
    try:
        _, anc, _, _ = s.recvmsg(1, socket.CMSG_SPACE(4))
    except OSError as e:
        report["receive"] = _err(e)
        return None
    report["receive"] = "ok"
    return socket.socket(fileno=array.array("i", anc[0][2][:4])[0])


def application(environ, start_response):
    if environ.get("QUERY_STRING") == "attack":
        report = {}
        conn = connection()
        report["connection"] = conn is not None
        srv = socket.socket()  # never accepts: the lingering socket's queue stays full
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        KEPT.append(srv)
        c, report["linger"] = lingering(srv)
        got = [c, from_outside(report)]
        report["sent"] = 0
        for c in got:
            if c is None or conn is None:
                continue
            y = carried(c)
            try:
                conn.sendmsg([b"\x01"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          array.array("i", [y.fileno()]))])
                report["sent"] += 1
            except OSError as e:
                report["send"] = _err(e)
            y.close()
        with open(os.path.join(HERE, "report.json"), "w") as f:
            json.dump(report, f)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def _hand_over(path: Path, carrier: socket.socket, stop: threading.Event) -> socket.socket:
    """A local user's unix socket in the site's directory that hands `carrier` to whoever
    connects (the request's code), keeping no copy."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    path.chmod(0o666)
    srv.listen(1)
    srv.settimeout(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [carrier.fileno()]))])
                carrier.close()  # the copy on its way is the last: as a local user would
                stop.wait()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _get(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_tenant_cannot_freeze_the_web_server_in_front_of_it(env, users):
    env.add(env.site("a", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'))
    env.add(env.python_site("p", users[2], APP))
    proot = env.base / "srv" / "p"
    base = env.base / "nginx-freeze"
    base.mkdir()
    port = free_port()
    (base / "fastcgi.conf").write_text(Path("/etc/nginx/fastcgi.conf").read_text())
    argv = nginx_conf(base, f"""
    server {{
        listen 127.0.0.1:{port};
        root {env.base / "srv" / "a"};
        location /p/ {{
            include /etc/nginx/fastcgi_params;
            fastcgi_read_timeout 600s;
            fastcgi_pass unix:{env.socket("p")};
        }}
        location ~ \\.php$ {{
            include /etc/nginx/snippets/fastcgi-php.conf;
            fastcgi_pass unix:{env.socket("a")};
        }}
    }}""")  # worker_processes 1: every site behind the one worker the attack reaches
    stop = threading.Event()
    with lingering_carrier() as carrier, open(base / "startup.log", "w") as said:
        hand = _hand_over(proot / "hand.sock", carrier, stop)
        proc = subprocess.Popen(argv, stdout=said, stderr=subprocess.STDOUT)
        try:
            wait_port(port, proc, base / "startup.log")
            url = f"http://127.0.0.1:{port}"
            assert _get(f"{url}/index.php", 10 * SLOW) == 200
            # the attacker's own answer is broken either way (a stray byte in its stream)
            attack = threading.Thread(target=_get, args=(f"{url}/p/?attack", 10 * SLOW),
                                      daemon=True)
            attack.start()
            report_path = proot / "report.json"
            env.wait_for("the attack's report", report_path.exists)
            time.sleep(0.2)
            report = json.loads(report_path.read_text())
            for _ in range(10):  # the other site, through the same nginx worker
                t0 = time.monotonic()
                assert _get(f"{url}/index.php", 2 * SLOW) == 200, report
                assert time.monotonic() - t0 < 1 * SLOW, report
                time.sleep(0.1)
            assert report["connection"], report
            assert report["sent"] == 0, report  # nothing passes over its connection
            assert report["send"] == "EPERM", report
            assert report["linger"] == "EPERM", report  # no lingering socket made inside
            assert report["receive"] == "EPERM", report  # nor taken in from outside
            attack.join(10 * SLOW)
        finally:
            stop.set()
            hand.close()
            terminate(proc)
