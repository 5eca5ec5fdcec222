"""access.log against its tenant and any web client (issue 36, attacks 4 and 10): no
process of the tenant holds a root-owned file, lines go through the master under the
tenant's size cap, and what a client sends is escaped by both writers (PHP's and the
python worker's)."""

from __future__ import annotations

import time

import pytest

from tenantfpm.master.stdio import CHUNK
from tenantfpm.wire import fastcgi
from tests.integration.conftest import body_ok, running_env

FORMAT = '%R - %u %t \\"%m %r%Q%q\\" %s %{HTTP_USER_AGENT}e'

# the descriptors of this process open for writing on root's files (the scoreboard, a
# sealed memfd the master made, is no file on any disk)
PY_APP = '''
import os, stat

def _mode(fd):
    for line in open("/proc/self/fdinfo/" + fd):
        if line.startswith("flags:"):
            return int(line.split()[1], 8) & 3  # O_WRONLY or O_RDWR
    return 0

def root_files():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(fd))
        except OSError:
            continue
        target = os.readlink("/proc/self/fd/" + fd)
        writable = _mode(fd) != 0
        if (stat.S_ISREG(st.st_mode) and st.st_uid == 0 and writable
                and not target.startswith("/memfd:")):
            out.append(target)
    return out

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/fds":
        return [("root-owned: %s" % ",".join(root_files())).encode()]
    return [b"ok"]
'''

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[1;31mFAKE\x1b[0m\nforged 200 line"


@pytest.fixture(scope="module")
def arena(users):
    with running_env() as env:
        env.add(env.site("a", users[0], f"""
            [pm]
            mode = "static"
            max_children = 1
            [log]
            access = true
            access_format = "{FORMAT}"
            max_size = "16K"
        """))
        env.add(env.python_site("p", users[2], PY_APP, f"""
            [log]
            access = true
            access_format = "{FORMAT}"
        """))
        yield env


def hostile_request(env, name: str, uri: str) -> fastcgi.Response:
    params = fastcgi.cgi_params(str(env.base / "srv" / name), uri,
                                headers=[("User-Agent", "UA\x1b[5mBLINK")])
    params["REMOTE_USER"] = HOSTILE
    return fastcgi.request(env.socket(name), params, timeout=20)


def access_log(env, name: str) -> bytes:
    p = env.base / "log" / name / "access.log"
    return p.read_bytes() if p.exists() else b""


def test_no_process_of_a_tenant_holds_a_root_owned_file(arena):
    r = arena.php("a", r"""
        $root = [];
        foreach (scandir("/proc/self/fd") as $fd) {
            if (!ctype_digit($fd)) continue;
            $st = @stat("/proc/self/fd/$fd");
            $target = (string)@readlink("/proc/self/fd/$fd");
            $info = (string)@file_get_contents("/proc/self/fdinfo/$fd");
            preg_match('/^flags:\s+([0-7]+)/m', $info, $m);
            $writable = $m && (octdec($m[1]) & 3);
            if ($st && ($st["mode"] & 0170000) == 0100000 && $st["uid"] == 0 && $writable
                && strpos($target, "/memfd:") !== 0) $root[] = $target;
        }
        echo "root-owned: " . implode(",", $root);
    """)
    assert body_ok(r) and r.body.decode() == "root-owned: ", r.stdout[:300]
    r = fastcgi.request(arena.socket("p"), fastcgi.cgi_params(str(arena.base / "srv" / "p"),
                                                              "/fds"), timeout=20)
    assert body_ok(r) and r.body.decode() == "root-owned: ", r.stdout[:300]


@pytest.mark.parametrize("tenant", ["a", "p"])
def test_a_web_clients_control_bytes_are_escaped_in_access_log(arena, tenant):
    uri = "/index.php?q=1" if tenant == "a" else "/?q=1"
    r = hostile_request(arena, tenant, uri)
    assert body_ok(r), r.stdout[:300]
    arena.wait_for("the access line", lambda: b"BLINK" in access_log(arena, tenant))
    data = access_log(arena, tenant)
    line = next(x for x in data.split(b"\n") if b"BLINK" in x)
    assert b"\x1b" not in data and b"\x07" not in data
    assert b"\\x1b]0;owned\\x07" in line and b"UA\\x1b[5mBLINK" in line, line
    assert b"\\x0aforged 200 line" in line, line  # one request, one line
    assert not any(x.startswith(b"forged") for x in data.split(b"\n"))


def test_access_lines_obey_the_tenants_size_cap(arena):
    body = "x" * 2000
    for _ in range(100):  # 100 lines of 2 kB, 200 kB: far past log.max_size (16K)
        r = arena.request("a", f"/index.php?{body}")
        assert body_ok(r)
    arena.wait_for("the cap said in error.log",
                   lambda: "access.log reached log.max_size" in arena.log("a"))
    time.sleep(0.5)
    size = len(access_log(arena, "a"))
    assert size <= 16 * 1024 + CHUNK, size  # the cap, plus at most one read's lines
