"""A worker that forges its own scoreboard cannot switch its timeouts off (issue 36,
attack 5): the master times a request from what it observed itself. Forged from a python
app (fd 4, its own) and tried from PHP through /proc/self/mem, as the red team did (a PHP
worker is no longer dumpable, so that open is refused too): a start in the future, an
idle state while busy, garbage."""

from __future__ import annotations

import struct
import time

import pytest

from tenantfpm.wire import fastcgi
from tests.integration.conftest import SLOW, running_env
from tests.integration.test_timeouts import SITE

# static, one worker; slow.log at 1 s, killed at 3 s
TIMEOUTS = SITE[SITE.index("[limits]"):]

STATE_AT, START_AT = 8, 32  # wire/scoreboard.py's layout: the state byte, request_start
FORGERIES = {
    "future": (START_AT, struct.pack("=d", 9e7)),
    "idle": (STATE_AT, struct.pack("=B", 1)),  # IDLE while it runs
    "garbage": (STATE_AT, b"\xff" * 24),  # no state, no count: the page reads as nothing
}

PHP_FORGE = """<?php
foreach (file('/proc/self/maps') as $l) {
    if (strpos($l, 'memfd:tenantfpm-scoreboard') !== false) { $m = $l; break; }
}
$addr = hexdec(explode('-', $m)[0]);
$at = (int)$_GET['at'];
$bytes = hex2bin($_GET['bytes']);
$t = microtime(true);
$refused = 0;
while (microtime(true) - $t < 12) {   // keep it forged: the worker's own code rewrites it
    $f = @fopen('/proc/self/mem', 'r+');  // refused since the worker is not dumpable
    if ($f) {
        fseek($f, $addr + $at);
        fwrite($f, $bytes);
        fclose($f);
    } else {
        $refused++;
    }
    usleep(50000);
}
echo "survived, refused $refused";
"""

PY_APP = '''
import os, time
from urllib.parse import parse_qs

def application(environ, start_response):
    q = parse_qs(environ["QUERY_STRING"])
    at, data = int(q["at"][0]), bytes.fromhex(q["bytes"][0])
    t = time.monotonic()
    while time.monotonic() - t < 12:
        os.pwrite(4, data, at)
        time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"survived"]
'''


@pytest.fixture(scope="module")
def arena(users):
    with running_env() as env:
        env.add(env.site("a", users[0], SITE))
        (env.base / "srv" / "a" / "forge.php").write_text(PHP_FORGE)
        env.add(env.python_site("p", users[2], PY_APP, TIMEOUTS))
        yield env


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
@pytest.mark.parametrize("tenant", ["a", "p"])
def test_a_forged_scoreboard_does_not_stop_the_terminate_timeout(arena, tenant, forgery):
    at, data = FORGERIES[forgery]
    before = arena.status(tenant)["terminated_requests"]
    uri = ("/forge.php" if tenant == "a" else "/") + f"?at={at}&bytes={data.hex()}"
    root = str(arena.base / "srv" / tenant)
    started = time.monotonic()
    r = fastcgi.request(arena.socket(tenant), fastcgi.cgi_params(root, uri), timeout=30 * SLOW)
    took = time.monotonic() - started
    assert b"survived" not in r.stdout, (took, r.stdout[:200])
    assert took < 10 * SLOW, took  # killed at its 3 s, give or take the master's looks
    arena.wait_for("the kill counted", lambda: arena.status(tenant)["terminated_requests"]
                   == before + 1)
    assert "execution timed out" in arena.log(tenant)
    arena.wait_for("a replacement", lambda: fastcgi.request(
        arena.socket(tenant), fastcgi.cgi_params(root, "/"), timeout=10).complete)
