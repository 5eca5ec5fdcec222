"""Listen-queue figures from the kernel (sock_diag), for Unix and TCP sockets, and for a
tenant in its own network namespace (its listening socket stays in the master's, where
nginx reaches it, so the master's dump sees it)."""

from __future__ import annotations

import threading

import pytest

from tenantfpm.wire import fastcgi
from tests.integration.conftest import body_ok, free_port


@pytest.mark.parametrize("kind", ["unix", "tcp", "tcp-isolated"])
def test_waiting_connections_show_in_listen_queue(env, users, kind):
    port = free_port()
    listen = "" if kind == "unix" else f'[listen]\naddress = "127.0.0.1:{port}"\n'
    network = '[isolation]\nnetwork = "isolated"\n' if kind == "tcp-isolated" else ""
    env.add(env.site("q", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'
                     + listen + network))
    st = env.wait_for("one idle worker",
                      lambda: (s := env.status("q"))["idle_processes"] == 1 and s)
    assert st["listen_queue"] == 0 and st["max_listen_queue"] == 0

    address = env.socket("q") if kind == "unix" else f"127.0.0.1:{port}"
    params = fastcgi.cgi_params(str(env.base / "srv" / "q"), "/sleep.php?ms=1500")
    results: list[fastcgi.Response] = []

    def one() -> None:
        results.append(fastcgi.request(address, params, timeout=60))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    # one request runs in the only worker; the other three wait in the kernel's queue
    busy = env.wait_for("3 queued connections",
                        lambda: (s := env.status("q"))["listen_queue"] == 3 and s)
    assert busy["active_processes"] == 1 and busy["max_listen_queue"] >= 3
    for t in threads:
        t.join()
    assert len(results) == 4 and all(body_ok(r) for r in results)
    after = env.status("q")
    assert after["listen_queue"] == 0 and after["max_listen_queue"] >= 3
