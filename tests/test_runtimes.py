"""The Runtime interface: what each `[runtime] type` tells the master."""

import os
import stat
from pathlib import Path

from tenantfpm import pm, runtimes
from tenantfpm.config.model import PHP_ENGINE_BINARY, GlobalConfig, Site
from tenantfpm.config.rules import parse_listen
from tenantfpm.config.tenant import Tenant
from tenantfpm.wire.scoreboard import Board, Slot


def tenant(tmp_path, **runtime) -> Tenant:
    site = Site.model_validate({"name": "shop", "user": "alice", "root": "/srv/shop",
                                "runtime": runtime, "log": {"access": True}})
    return Tenant(site=site, listen=parse_listen("/run/t/shop.sock"), log_dir=str(tmp_path),
                  run_dir=str(tmp_path / "run"), uid=1001, gid=1001)


def test_each_type_has_a_runtime_and_the_own_workers_report_their_requests(tmp_path):
    assert set(runtimes.RUNTIMES) == {"php", "php-cgi", "python", "fastcgi"}
    php, py = tenant(tmp_path), tenant(tmp_path, type="python", app="app:application")
    cgi = tenant(tmp_path, type="php-cgi")
    assert runtimes.of(php).reports_requests and runtimes.of(py).reports_requests
    assert not runtimes.of(cgi).reports_requests
    assert runtimes.of(php).zygote and not runtimes.of(cgi).zygote
    assert runtimes.of(php).ini_source(php) == str(tmp_path / "run" / "php.ini")
    assert runtimes.of(cgi).ini_source(cgi) == str(tmp_path / "run" / "php.ini")
    assert runtimes.of(py).ini_source(py) is None and runtimes.of(py).binds(py)
    assert "SCRIPT_FILENAME" in runtimes.of(php).nginx_locations(php)
    assert "location / {" in runtimes.of(py).nginx_locations(py)
    assert GlobalConfig()  # the defaults still load


def test_python_channels_are_a_scoreboard_a_trace_pipe_and_an_access_pipe(tmp_path):
    py = tenant(tmp_path, type="python", app="app:application")
    ch = runtimes.of(py).channels(py)
    try:
        board_fd, trace_w, access_w = ch.pass_fds
        assert (board_fd, trace_w, access_w) == ch.worker_ends
        # access.log's lines go through a pipe the master reads: no log in the worker
        assert stat.S_ISFIFO(os.fstat(access_w).st_mode) and ch.access is not None
        Board(board_fd).publish(Slot(state=1, requests=3))
        assert ch.board is not None and ch.board.read().requests == 3
        os.write(trace_w, b"x")
        assert os.read(ch.trace, 1) == b"x"
        os.write(access_w, b"line\n")
        assert os.read(ch.access, 16) == b"line\n"
        ch.close_worker_ends()
        assert os.read(ch.trace, 1) == b""  # the master holds no write end of its own
        assert os.read(ch.access, 1) == b""
    finally:
        ch.close()
    fcgi = tenant(tmp_path, type="fastcgi", command=["/usr/bin/true"])
    assert runtimes.of(fcgi).channels(fcgi).pass_fds == ()


def test_php_zygote_gets_its_ini_locked_keys_user_and_home(tmp_path):
    site = Site.model_validate({"name": "shop", "user": "alice", "root": "/srv/shop",
                                "ini": {"memory_limit": "64M", "display_errors": False}})
    t = Tenant(site=site, listen=parse_listen("/run/t/shop.sock"), log_dir=str(tmp_path),
               run_dir=str(tmp_path / "run"), uid=1001, gid=1001)
    argv, env = runtimes.of(t).zygote_command(t)
    # the php-cgi engine: Debian's binary, the SAPI preloaded as the sandbox shows it
    assert argv[0] == os.path.realpath(PHP_ENGINE_BINARY)
    assert env["LD_PRELOAD"].endswith("/tenantfpm/libexec/tenantfpm-php.so")
    assert env["LD_PRELOAD"].startswith("/run/tenantfpm/")
    assert argv[argv.index("-c") + 1] == "/etc/tenantfpm/php.ini"
    locked = [argv[i + 1] for i, a in enumerate(argv) if a == "-a"]
    assert locked == ["memory_limit", "display_errors"]
    assert argv[argv.index("-s") + 1] == str(pm.SPARE_DELAY_MS)  # dynamic: keeps a spare
    assert env["USER"] == "alice" and env["HOME"] == "/srv/shop"
    assert runtimes.of(t).binds(t)[0][2] is True  # the package, read-only
    libphp = Site.model_validate({"name": "shop", "user": "alice", "root": "/srv/shop",
                                  "runtime": {"engine": "libphp"}})
    t = Tenant(site=libphp, listen=parse_listen("/run/t/shop.sock"), log_dir=str(tmp_path),
               run_dir=str(tmp_path / "run"), uid=1001, gid=1001)
    argv, env = runtimes.of(t).zygote_command(t)
    assert argv[0].endswith("/tenantfpm/libexec/tenantfpm-php")  # as the sandbox shows it
    assert "LD_PRELOAD" not in env


def test_every_runtime_gives_user_and_home_as_fpm_does(tmp_path):
    """USER and HOME for every worker (the tenant's user; in the sandbox its root is the
    home its /etc/passwd names); the tenant's [env] may set its own."""
    for kind in ("php-cgi", "python", "fastcgi"):
        t = tenant(tmp_path, type=kind, **({"app": "app"} if kind == "python" else {}),
                   **({"command": ["/usr/bin/true"]} if kind == "fastcgi" else {}))
        _, env = runtimes.of(t).command(t, 10)
        assert (env["USER"], env["HOME"]) == ("alice", "/srv/shop"), kind
    php = tenant(tmp_path)
    _, env = runtimes.of(php).zygote_command(php)
    assert (env["USER"], env["HOME"]) == ("alice", "/srv/shop")


def test_ini_defaults_are_in_php_ini_unlocked_and_ini_wins_a_shared_key(tmp_path):
    """FPM's two levels: php_value (a default a script may change) and php_admin_value
    (locked): `ini_defaults` goes into the tenant's php.ini only, `ini` is locked too."""
    site = Site.model_validate({"name": "shop", "user": "alice", "root": "/srv/shop",
                                "ini_defaults": {"date.timezone": "UTC",
                                                 "memory_limit": "32M"},
                                "ini": {"memory_limit": "64M"}})
    t = Tenant(site=site, listen=parse_listen("/run/t/shop.sock"), log_dir=str(tmp_path),
               run_dir=str(tmp_path / "run"), uid=os.getuid(), gid=os.getgid())
    argv, _ = runtimes.of(t).zygote_command(t)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-a"] == ["memory_limit"]
    assert site.php_ini() == {"date.timezone": "UTC", "memory_limit": "64M"}
    from tenantfpm.runtimes.php_cgi import write_ini

    text = Path(write_ini(t, None)).read_text()
    assert "date.timezone = UTC\n" in text and "memory_limit = 64M\n" in text
    assert "memory_limit = 32M" not in text
