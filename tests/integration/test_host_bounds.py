"""The master's work per event is bounded by the tenant's own size, not by the host's
(issue 36, attack 7): a tenant that fills the host's TCP table with its own listeners
does not make the master's look at another tenant's TCP listener cost more.

Measured as the master's CPU time (the work it did, whatever the machine's load)
while a TCP tenant serves requests: before, each look dumped and parsed every
listening socket of the host (42 % of a core at 60,000 sockets, loop-bound)."""

from __future__ import annotations

import os
import pwd
import threading
import time
from pathlib import Path

import pytest

from tenantfpm.wire import fastcgi
from tests.integration.conftest import SLOW, body_ok, free_port, running_env

LISTENERS = r'''
import socket, sys, time
held = []
for i in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.%d.%d" % (1 + i // 250, 1 + i % 250), 0))
    s.listen(1)
    held.append(s)
print(len(held), flush=True)
time.sleep(float(sys.argv[2]))
'''

COUNT = 12000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def arena(users):
    with running_env() as env:
        env.add(env.site("a", users[0], """
            [pm]
            mode = "static"
            max_children = 1
            [limits]
            memory = "512M"
            open_files = 16384
        """))
        root = env.base / "srv" / "a"
        uid = pwd.getpwnam(users[0]).pw_uid
        os.chown(root, uid, uid)  # its script writes what it did there
        env.tport = free_port()
        env.add(env.site("t", users[3], f"""
            [listen]
            address = "127.0.0.1:{env.tport}"
            [pm]
            mode = "ondemand"
            max_children = 2
        """))
        yield env


def master_cpu_per_request(env) -> tuple[float, int]:
    """The master's CPU seconds per request while t serves requests one after another
    for a few seconds, and how many it served."""
    stop = threading.Event()
    served: list[bool] = []

    def load() -> None:
        while not stop.is_set():
            served.append(body_ok(fastcgi.request(
                f"127.0.0.1:{env.tport}",
                fastcgi.cgi_params(str(env.base / "srv" / "t"), "/index.php"), timeout=20)))

    t = threading.Thread(target=load)
    before = cpu_seconds(env.master.pid)
    t.start()
    time.sleep(4 * SLOW)
    stop.set()
    t.join()
    used = cpu_seconds(env.master.pid) - before
    assert len(served) > 20 and all(served)
    return used / len(served), len(served)


def test_a_tenants_own_listeners_do_not_cost_the_master_per_look(arena):
    env = arena
    alone, _ = master_cpu_per_request(env)  # the host with its few listeners
    (env.base / "srv" / "a" / "listeners.py").write_text(LISTENERS)
    r = env.php("a", f"""
        exec("python3 " . __DIR__ . "/listeners.py {COUNT} 600 > " . __DIR__ .
             "/listeners.out 2>&1 &");
        echo "started";
    """)
    assert body_ok(r)
    out = env.base / "srv" / "a" / "listeners.out"
    env.wait_for("the tenant's listeners", lambda: out.exists() and out.read_text().strip()
                 .isdigit(), timeout=60)
    assert int(out.read_text()) == COUNT, out.read_text()
    crowded, n = master_cpu_per_request(env)
    # what the master did per request of t's, with the host holding 12,000 more listeners
    # (a's): what it did without them, never a dump of them at every look (before: 10x)
    assert crowded < 2 * alone + 0.00002 * SLOW, (crowded, alone, n)
