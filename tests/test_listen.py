"""The TCP allowlist is a kernel filter: attempt connections from other sources."""

import socket

import pytest

from tenantfpm.config.rules import parse_listen
from tenantfpm.listen import open_listener


def connect_from(source: str, port: int) -> socket.socket:
    c = socket.socket()
    c.settimeout(0.5)
    c.bind((source, 0))
    c.connect(("127.0.0.1", port))
    return c


def test_allowed_clients_drop_other_sources():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    lst = open_listener(parse_listen(f"127.0.0.1:{port}"), owner="root", group="root",
                        mode="0660", backlog=8, allowed_clients=["127.0.0.2"])
    try:
        allowed = connect_from("127.0.0.2", port)
        conn, peer = lst.accept()
        assert peer[0] == "127.0.0.2"
        conn.close()
        allowed.close()
        with pytest.raises(TimeoutError):  # the SYN is dropped, never answered
            connect_from("127.0.0.1", port).close()
    finally:
        lst.close()


def test_unix_socket_mode_and_owner(tmp_path):
    path = tmp_path / "t.sock"
    lst = open_listener(parse_listen(str(path)), owner="www-data", group="www-data",
                        mode="0660", backlog=8, allowed_clients=[])
    try:
        st = path.stat()
        assert oct(st.st_mode & 0o777) == "0o660"
        if __import__("os").geteuid() == 0:
            assert st.st_uid == __import__("pwd").getpwnam("www-data").pw_uid
    finally:
        lst.close()
