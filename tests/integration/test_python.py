"""The python runtime end to end: WSGI apps in the tenant's sandbox, served by our worker.

The apps run under the system's /usr/bin/python3 (Flask from Debian's
python3-flask), inside the same sandbox as a PHP tenant; requests go through
the tenant's socket with nginx's params, and one test puts a real nginx in
front of a Flask tenant.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tenantfpm.errors import TenantFPMError
from tenantfpm.wire import fastcgi
from tests.integration.conftest import SLOW, running_env

APP = '''
import json, os, socket, sys, time

def slow_part(ms):
    time.sleep(ms / 1000)  # line 5: the slow log must point here

def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    if path == "/sleep":
        slow_part(int(q.get("ms", "500")))
    if path == "/boom":
        raise RuntimeError("the app broke on purpose")
    if path == "/alloc":
        blob = bytearray(int(q["mb"]) << 20)
    if path == "/finish":
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"accepted"
        environ["tenantfpm.finish_request"]()
        time.sleep(int(q.get("ms", "1500")) / 1000)
        with open(q["mark"], "w") as f:
            f.write("done")
        return
    if path == "/exists":
        start_response("200 OK", [("Content-Type", "application/json")])
        yield json.dumps(os.path.exists(q["path"])).encode()
        return
    if path == "/post":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield f"got {len(body)} bytes".encode()
        return
    info = {"pid": os.environ.get("TENANTFPM_WORKER_PID"), "uid": os.getuid(),
            "path": path, "host": socket.gethostname(), "tz": time.strftime("%Z"),
            "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "python": sys.executable}
    start_response("200 OK", [("Content-Type", "application/json")])
    yield json.dumps(info).encode()
'''

FLASK_APP = '''
import time

from flask import Flask, request

app = Flask(__name__)

@app.route("/hello/<name>")
def hello(name):
    return f"hello {name} from flask"

@app.route("/form", methods=["POST"])
def form():
    return f"{request.form['a']}+{request.form['b']}"

@app.route("/later/<int:ms>")
def later(ms):
    finish = request.environ["tenantfpm.finish_request"]
    def answer_then_work():
        yield "accepted"
        finish()
        time.sleep(ms / 1000)
    return app.response_class(answer_then_work())
'''

VALIDATED_APP = '''
from wsgiref.validate import validator

def plain(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.errors"].write("")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"validated ", body]

application = validator(plain)
'''


@pytest.fixture(scope="module")
def env(users):
    with running_env() as e:
        e.users = users
        yield e


def python_site(env, name: str, user: str, body: str = "", app: str = "app:application",
                files: dict[str, str] | None = None, runtime_extra: str = "") -> Path:
    root = env.base / "srv" / name
    root.mkdir(parents=True, exist_ok=True)
    for fname, code in (files or {"app.py": APP}).items():
        (root / fname).write_text(textwrap.dedent(code))
    for p in (env.base / "srv", root):
        p.chmod(0o755)
    return env.site(name, user, f'[runtime]\ntype = "python"\napp = "{app}"\n'
                    + runtime_extra + textwrap.dedent(body), root=root)


def get(env, name: str, uri: str, body: bytes = b"", timeout: float = 20) -> fastcgi.Response:
    root = str(env.base / "srv" / name)
    params = fastcgi.cgi_params(root, uri, method="POST" if body else "GET", body=body)
    return fastcgi.request(env.socket(name), params, body, timeout=timeout * SLOW)


def info(env, name: str, uri: str = "/") -> dict:
    r = get(env, name, uri)
    assert r.status == 200, (r.stdout, env.log(name)[-2000:])
    return json.loads(r.body)


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def web(env):
    """One tenant with the plain app, slowlog/terminate timeouts and the access log."""
    env.add(python_site(env, "web", env.users[0], """
        [pm]
        mode = "static"
        max_children = 2
        [limits]
        request_slowlog_timeout = "1s"
        request_terminate_timeout = "4s"
        [log]
        access = true
        access_format = "%R %m %r%Q%q %s %{mili}d %n"
    """))
    return "web"


def test_the_app_runs_sandboxed_as_the_tenant(env, web):
    got = info(env, web, "/some/path")
    assert got["uid"] == int(subprocess.check_output(["id", "-u", env.users[0]]))
    assert got["path"] == "/some/path" and got["host"] == "web"
    # the tenant's own PID namespace, where the zygote (1) and its workers are not
    # dumpable (their /proc entries root's, hidden by hidepid=2): the worker sees itself
    # and nothing of the host's
    assert len(got["procs"]) == 1 and got["procs"][0] != 1, got["procs"]
    assert got["python"] == "/usr/bin/python3"
    assert "pid" in got and int(got["pid"]) in [p["pid"] for p in env.status(web)["processes"]]
    # the host's files outside the tenant's root are not there at all
    for path in (env.base / "tenantfpm.toml", env.base / "log", "/root", "/etc/shadow"):
        assert get(env, web, f"/exists?path={path}").body == b"false", path


def test_status_and_access_log_are_exact(env, web):
    before = env.status(web)
    n = 7
    for i in range(n):
        assert get(env, web, f"/count?i={i}").status == 200
    # a worker counts a request and writes its access.log line after sending the response,
    # so both are waited for, and two workers' lines may land in either order
    done_before = sum(p["requests"] for p in before["processes"])

    def all_counted() -> dict | None:
        st = env.status(web)
        done = sum(p["requests"] for p in st["processes"])
        return st if (st["accepted_conn"] == before["accepted_conn"] + n
                      and done == done_before + n) else None

    st = env.wait_for("the scoreboard's counts", all_counted)
    last = [p for p in st["processes"] if p["request_uri"] == f"/count?i={n - 1}"]
    assert last and last[0]["state"] == "Idle" and last[0]["last_request_memory"] > 1 << 20
    assert last[0]["last_request_cpu"] is not None and last[0]["request_duration_ms"] >= 0

    def access_lines() -> list[str] | None:
        lines = read(env.base / "log" / web / "access.log").splitlines()
        counted = [line for line in lines if " /count?i=" in line]
        return counted if len(counted) >= n else None

    counted = env.wait_for("the access.log lines", access_lines)
    assert len(counted) == n
    [line] = [line for line in counted if f" /count?i={n - 1} " in line]
    ip, method, uri, status, ms, pool = line.split()
    assert (ip, method, uri, status, pool) == ("127.0.0.1", "GET", f"/count?i={n - 1}",
                                               "200", "web")
    assert float(ms) >= 0
    # what a provider reviews: the same lines through the CLI
    shown = env.cli("logs", web, "--access", "--grep", "/count").stdout.splitlines()
    assert shown == counted


def test_slow_log_has_the_python_traceback_with_function_and_line(env, web):
    r = get(env, web, "/sleep?ms=2500")
    assert r.status == 200
    slow = env.wait_for("the slow.log entry", lambda: read(env.base / "log" / web / "slow.log"))
    entry = slow.strip().split("\n\n")[-1].splitlines()
    assert f"[pool {web}] pid " in entry[0]
    assert entry[1] == f"script_filename = {env.base / 'srv' / web / 'sleep'}"
    frames = entry[2:]
    app_py = env.base / "srv" / web / "app.py"
    assert frames[0] == f"slow_part() {app_py}:5", slow
    assert frames[1].startswith(f"application() {app_py}:"), slow
    assert "executing too slow" in env.log(web)
    assert env.status(web)["slow_requests"] >= 1


def test_request_terminate_timeout_kills_and_replaces_the_worker(env, web):
    before = env.status(web)["terminated_requests"]
    r = get(env, web, "/sleep?ms=20000")
    assert not r.complete
    assert env.status(web)["terminated_requests"] == before + 1
    assert "execution timed out" in env.log(web)
    env.wait_for("a replacement", lambda: len(env.status(web)["processes"]) == 2)
    time.sleep(1.5)  # a tick later: still two, not a replacement from each of two places
    assert len(env.status(web)["processes"]) == 2
    assert get(env, web, "/").status == 200


def test_finish_request_answers_at_once_and_keeps_the_worker_busy(env, web):
    mark = "/tmp/finished-" + str(time.time())
    started = time.monotonic()
    r = get(env, web, f"/finish?ms={int(1500 * SLOW)}&mark={mark}")
    took = time.monotonic() - started
    assert r.complete and r.body == b"accepted"
    assert took < 1.5 * SLOW, f"the answer waited for the work after finish_request ({took:.2f}s)"
    # a worker that has served nothing yet (the replacement of the one the previous test
    # had killed may still be starting) has no request_uri
    busy = [p for p in env.status(web)["processes"]
            if (p["request_uri"] or "").startswith("/finish")]
    assert busy and busy[0]["state"] == "Running"
    env.wait_for("the work after finish_request", lambda: any(
        p["state"] == "Idle" and (p["request_uri"] or "").startswith("/finish")
        for p in env.status(web)["processes"]))
    # written after the response, in the tenant's own /tmp (not the host's)
    assert get(env, web, f"/exists?path={mark}").body == b"true"
    assert not os.path.exists(mark)


def test_exceptions_go_to_the_error_log_and_max_requests_recycles(env):
    env.add(python_site(env, "recycle", env.users[1], """
        [pm]
        mode = "static"
        max_children = 1
        max_requests = 3
    """))
    first = info(env, "recycle")["pid"]
    r = get(env, "recycle", "/boom")
    assert r.status == 500 and b"RuntimeError" not in r.body  # display_errors is off
    # the master reads the worker's stderr on its loop: the line may land just after the 500
    env.wait_for("the traceback in error.log",
                 lambda: "RuntimeError: the app broke on purpose" in env.log("recycle"))
    assert info(env, "recycle")["pid"] == first  # the third request: the limit
    env.wait_for("the worker's replacement", lambda: info(env, "recycle")["pid"] != first)
    assert f"child {first} exited with code 0" in env.log("recycle")
    env.api("DELETE", "/v1/tenants/recycle")


def test_ini_mapping(env):
    errors = env.base / "srv" / "ini" / "py-errors.log"
    site = python_site(env, "ini", env.users[1], f"""
        [pm]
        mode = "static"
        max_children = 1
        [ini]
        max_execution_time = 1
        post_max_size = "1K"
        memory_limit = "256M"
        display_errors = true
        "date.timezone" = "Asia/Tokyo"
        error_log = "{errors}"
    """)
    errors.touch()  # where the tenant may write: its own file
    user = pwd.getpwnam(env.users[1])
    os.chown(errors, user.pw_uid, user.pw_gid)
    env.add(site)
    assert info(env, "ini")["tz"] == "JST"
    r = get(env, "ini", "/sleep?ms=3000")
    assert r.status == 500 and b"Maximum execution time of 1 seconds exceeded" in r.body
    r = get(env, "ini", "/post", body=b"x" * 2048)
    assert r.status == 413
    assert get(env, "ini", "/post", body=b"x" * 512).body == b"got 512 bytes"
    r = get(env, "ini", "/alloc?mb=400")
    assert r.status == 500 and b"MemoryError" in r.body  # display_errors: the traceback
    assert "MemoryError" in errors.read_text()  # error_log: there, not in error.log
    assert "MemoryError" not in env.log("ini")
    pids = {p["pid"] for p in env.status("ini")["processes"]}
    assert info(env, "ini")["pid"] and {p["pid"] for p in env.status("ini")["processes"]} == pids
    env.api("DELETE", "/v1/tenants/ini")


def test_unsupported_ini_and_a_missing_app_are_refused_at_check(env):
    site = python_site(env, "badini", env.users[2], """
        [ini]
        "opcache.enable" = 1
    """)
    r = env.cli("check", str(site), check=False)
    assert r.returncode == 1
    assert "ini: not supported by the python runtime: opcache.enable; supported:" in r.stderr
    site = python_site(env, "noapp", env.users[2], app="")
    r = env.cli("check", str(site), check=False)
    assert r.returncode == 1 and "runtime.app" in r.stderr


def test_an_app_that_fails_to_import_is_failed_with_the_last_line(env):
    site = python_site(env, "broken", env.users[2], app="nosuchmodule:app")
    with pytest.raises(TenantFPMError) as e:
        env.add(site)
    assert "ModuleNotFoundError: No module named 'nosuchmodule'" in str(e.value)
    assert "broken" not in [t["name"] for t in env.api("GET", "/v1/tenants")]
    assert "Traceback" in env.log("broken")  # the whole traceback, in its error.log


def test_without_isolation_the_worker_runs_from_the_installed_package(env):
    env.add(python_site(env, "plain", env.users[2], """
        [pm]
        mode = "static"
        max_children = 1
        [isolation]
        enabled = false
    """))
    try:
        got = info(env, "plain")
        assert got["uid"] == int(subprocess.check_output(["id", "-u", env.users[2]]))
        assert len(got["procs"]) > 1  # the host's /proc: every process, not just itself
        assert "isolation.enabled = false" in env.log("plain")
    finally:
        env.api("DELETE", "/v1/tenants/plain")


def test_wsgi_compliance_checked_by_wsgiref_validate(env):
    env.add(python_site(env, "valid", env.users[2], app="app:application",
                        files={"app.py": VALIDATED_APP}))
    assert get(env, "valid", "/x?y=1").body == b"validated "
    assert get(env, "valid", "/x", body=b"payload").body == b"validated payload"
    assert "AssertionError" not in env.log("valid")
    env.api("DELETE", "/v1/tenants/valid")


def test_malformed_fastcgi_does_not_hurt_the_worker(env, web):
    pids = {p["pid"] for p in env.status(web)["processes"]}
    for garbage in (b"\x02" + b"\0" * 15, b"\x01\x01\x00\x01\xff\xff\x00\x00" + b"x" * 100,
                    os.urandom(4000)):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(env.socket(web))
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(40 * SLOW)
            while s.recv(65536):
                pass
    assert get(env, web, "/").status == 200
    assert {p["pid"] for p in env.status(web)["processes"]} == pids
    assert "FastCGI connection dropped: protocol error: FastCGI version 2" in env.log(web)


def test_flask_tenant_through_nginx(env, tmp_path):
    added = env.cli("add", str(python_site(env, "flask", env.users[2], app="shop:app",
                                           files={"shop.py": FLASK_APP})))
    assert "server {" in added.stdout and env.socket("flask") in added.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the server block `add` printed (`tenantfpm nginx` prints it again), as it is
    block = env.cli("nginx", "flask", "--listen", f"127.0.0.1:{port}").stdout
    shutil.copy("/etc/nginx/fastcgi_params", tmp_path)  # the block includes it relatively
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
        worker_processes 1;
        daemon off;
        user www-data www-data;
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/error.log;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {tmp_path}/body;
            fastcgi_temp_path {tmp_path}/fastcgi;
            proxy_temp_path {tmp_path}/proxy;
            uwsgi_temp_path {tmp_path}/uwsgi;
            scgi_temp_path {tmp_path}/scgi;
            include {tmp_path}/flask.conf;
        }}
    """)
    (tmp_path / "flask.conf").write_text(block)
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp_path)],
                             stderr=subprocess.PIPE)
    try:
        env.wait_for("nginx", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/hello/tenant", timeout=20 * SLOW) as r:
            assert r.status == 200 and r.read() == b"hello tenant from flask"
        req = urllib.request.Request(f"{base}/form", data=b"a=1&b=2", method="POST")
        with urllib.request.urlopen(req, timeout=20 * SLOW) as r:
            assert r.read() == b"1+2"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/nowhere", timeout=20 * SLOW)
        assert e.value.code == 404  # Flask's answer, passed through
        # nginx (no fastcgi_keep_conn, as the block has it) answers when the worker ends
        # its side of the connection, not at END_REQUEST
        started = time.monotonic()
        with urllib.request.urlopen(f"{base}/later/{int(3000 * SLOW)}", timeout=20 * SLOW) as r:
            assert r.read() == b"accepted"
        took = time.monotonic() - started
        assert took < 1.5 * SLOW, f"the answer waited for the work after finish ({took:.2f}s)"
    finally:
        nginx.terminate()
        nginx.wait(10)
    env.api("DELETE", "/v1/tenants/flask")


IMPORTED_BY = """
import os, time
IMPORTED_IN = os.getpid()
HERE = os.path.dirname(os.path.abspath(__file__))
def application(environ, start_response):
    if environ.get("QUERY_STRING") == "hold":  # busy until the test lets it go
        while not os.path.exists(os.path.join(HERE, "release")):
            time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{IMPORTED_IN} {os.getpid()}".encode()]
"""


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy_app"])
def test_the_app_is_imported_once_in_the_zygote_unless_lazy(env, lazy):
    name = "lazy" if lazy else "eager"
    env.add(python_site(env, name, env.users[3], """
        [pm]
        mode = "static"
        max_children = 2
    """, app="imported:application", files={"imported.py": IMPORTED_BY},
        runtime_extra=f"lazy_app = {'true' if lazy else 'false'}\n"))
    try:
        env.wait_for("both workers", lambda: env.status(name)["idle_processes"] == 2)
        # one worker held busy while the other answers: both answer, whatever the
        # scheduler prefers
        root = env.base / "srv" / name
        with ThreadPoolExecutor(1) as ex:
            held = ex.submit(get, env, name, "/?hold")
            env.wait_for("a worker held", lambda: env.status(name)["active_processes"] == 1)
            seen = {tuple(get(env, name, "/").body.split())}
            (root / "release").write_text("")
            seen.add(tuple(held.result().body.split()))
        importers = {i for i, _ in seen}
        workers = {w for _, w in seen}
        if lazy:  # each worker imported it itself
            assert all(i == w for i, w in seen) and len(workers) == 2
        else:  # once, in the zygote (PID 1 of the tenant's namespace), before any fork
            assert importers == {b"1"} and b"1" not in workers
    finally:
        env.api("DELETE", f"/v1/tenants/{name}")
