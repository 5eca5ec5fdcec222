"""Network modes, attempted from inside the tenant's PHP: host, none, isolated."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.integration.conftest import body_ok


@contextlib.contextmanager
def serving(address: str, answer: bytes) -> Iterator[int]:
    """A TCP server on `address` that answers every connection with `answer`; its port."""
    srv = socket.socket()
    srv.bind((address, 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(answer)

    t = threading.Thread(target=serve)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        srv.close()


@pytest.fixture
def listener():
    """The host's loopback, answering "pong"."""
    with serving("127.0.0.1", b"pong") as port:
        yield port


CONNECT = """
$s = @stream_socket_client("tcp://%s:%d", $errno, $errstr, 2);
echo json_encode($s ? fread($s, 4) : "error $errno $errstr");
"""


def connect_from(env, tenant: str, host: str, port: int) -> str:
    r = env.php(tenant, CONNECT % (host, port))
    assert body_ok(r), r.stdout
    return json.loads(r.body)


def interfaces_of(env, tenant: str) -> list[str]:
    """From /proc/net/dev: net_get_interfaces() asks netlink with recvmsg(), which a
    tenant behind a unix listener may not call (docs/security.md)."""
    r = env.php(tenant, """
        $names = [];
        foreach (array_slice(file("/proc/net/dev"), 2) as $line) {
            $names[] = trim(explode(":", $line)[0]);
        }
        echo json_encode($names);
    """)
    return sorted(json.loads(r.body))


def test_host_network_reaches_host_loopback(env, users, listener):
    env.cli("add", str(env.site("h", users[0], '[pm]\nmode = "static"\nmax_children = 1\n')))
    assert connect_from(env, "h", "127.0.0.1", listener) == "pong"


def test_none_has_only_its_own_loopback(env, users, listener):
    env.cli("add", str(env.site("n", users[0], '[pm]\nmode = "static"\nmax_children = 2\n'
                                '[isolation]\nnetwork = "none"\n')))
    assert interfaces_of(env, "n") == ["lo"]
    assert connect_from(env, "n", "127.0.0.1", listener).startswith("error 111")  # refused
    # both workers share the tenant's namespace: one's listener is the other's loopback
    r = env.php("n", """
        $srv = stream_socket_server("tcp://127.0.0.1:0");
        $name = stream_socket_get_name($srv, false);
        $c = stream_socket_client("tcp://$name");
        $s = stream_socket_accept($srv);
        fwrite($s, "self");
        echo fread($c, 4);
    """)
    assert r.body == b"self"
    st = env.status("n")
    assert st["sandbox"]["network"] == "none"


def test_isolated_gets_a_veth_and_no_host_loopback(env, users, listener):
    env.cli("add", str(env.site("i", users[0], '[pm]\nmode = "static"\nmax_children = 1\n'
                                '[isolation]\nnetwork = "isolated"\n')))
    address = env.status("i")["sandbox"]["address"]
    assert address == "10.213.0.2"
    assert interfaces_of(env, "i") == ["eth0", "lo"]
    assert connect_from(env, "i", "127.0.0.1", listener).startswith("error 111")
    # the host end of the veth is reachable: a server bound there answers
    with serving("10.213.0.1", b"veth") as port:
        assert connect_from(env, "i", "10.213.0.1", port) == "veth"
    # a second isolated tenant gets the next /30
    env.cli("add", str(env.site("j", users[1], '[pm]\nmode = "static"\nmax_children = 1\n'
                                '[isolation]\nnetwork = "isolated"\n')))
    assert env.status("j")["sandbox"]["address"] == "10.213.0.6"


def test_descriptor_passing_is_kept_behind_tcp_and_refused_behind_a_unix_socket(env, users):
    """The passing rules (sandbox/seccomp.py) are for tenants whose web server connects
    over a unix socket, which could carry a descriptor to it; a tenant behind TCP keeps
    sendmsg and recvmsg, and with them glibc's netlink queries. The other's resolver asks
    one query at a time (sendmmsg is refused with the rest)."""
    from tenantfpm.wire import fastcgi
    from tests.integration.test_web_servers import free_port

    port = free_port()
    static = '[pm]\nmode = "static"\nmax_children = 1\n'
    env.add(env.site("tc", users[0], f'[listen]\naddress = "127.0.0.1:{port}"\n'
                                     'allowed_clients = ["127.0.0.1"]\n' + static))
    env.add(env.site("un", users[1], static))
    probe = """<?php
        socket_create_pair(AF_UNIX, SOCK_STREAM, 0, $pair);
        echo json_encode([
            @net_get_interfaces() !== false,
            @socket_sendmsg($pair[0], ["iov" => ["x"]], 0) !== false,
            str_contains(file_get_contents("/etc/resolv.conf"), "options single-request"),
        ]);"""
    answers = {}
    for name, address in (("tc", f"127.0.0.1:{port}"), ("un", env.socket("un"))):
        root = env.base / "srv" / name
        (root / "nl.php").write_text(probe)
        (root / "nl.php").chmod(0o644)
        r = fastcgi.request(address, fastcgi.cgi_params(str(root), "/nl.php"), timeout=30)
        assert body_ok(r), (name, r.stdout[:300])
        answers[name] = json.loads(r.body)
    # netlink, sendmsg, one query at a time
    assert answers == {"tc": [True, True, False], "un": [False, False, True]}
