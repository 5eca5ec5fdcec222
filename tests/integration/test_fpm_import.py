"""`tenantfpm import` against the real php-fpm: each pool runs under Debian's php-fpm8.2
first, then is imported and added as a tenant; it serves, and what its scripts read of
their configuration (ini_get(), getenv()) is what php-fpm gave the same pool.

The pools: tests/fpm_pools/ (a dynamic one with admin and user ini values, env, slow and
access logs; an ondemand one on TCP with allowed_clients; a static one with FPM's status
and ping pages), and Debian's own php-fpm.conf with its www.conf, moved to a scratch
directory (its socket, pid and log there, so the host's php-fpm is not touched).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tenantfpm.wire import fastcgi
from tests.integration.conftest import SLOW, running_env
from tests.integration.test_web_servers import free_port

FPM = shutil.which("php-fpm8.2") or "/usr/sbin/php-fpm8.2"
POOLS = Path(__file__).parent.parent / "fpm_pools"
KEYS = ["memory_limit", "disable_functions", "log_errors", "upload_max_filesize",
        "post_max_size", "display_errors", "date.timezone", "max_execution_time",
        "session.gc_maxlifetime", "open_basedir", "include_path"]
# and whether a script may change a php_value's key (date.timezone in shop.conf) and a
# php_admin_value's (memory_limit in shop.conf): FPM's two levels
PROBE = ("<?php $ini = array_map('ini_get', " + json.dumps(KEYS) + ");"
         " echo json_encode(['ini' => $ini, 'env' => getenv('SHOP_ENV'), 'sapi' => PHP_SAPI,"
         " 'set_user' => ini_set('date.timezone', 'UTC') !== false,"
         " 'set_admin' => ini_set('memory_limit', '100M') !== false]);")

pytestmark = pytest.mark.skipif(not os.path.exists(FPM), reason="php8.2-fpm is not installed")


@pytest.fixture(scope="module")
def env(users):
    with running_env() as e:
        yield e


def ask(address: str, root: Path, server: subprocess.Popen | None = None) -> dict:
    """The probe's answer through `address`: what the pool's scripts read."""
    deadline = time.time() + 20 * SLOW
    while True:
        if server is not None and server.poll() is not None:
            raise AssertionError(f"php-fpm exited: {server.stdout.read().decode()}")
        try:
            r = fastcgi.request(address, fastcgi.cgi_params(str(root), "/probe.php"),
                                timeout=20 * SLOW)
            if r.status == 200:
                return json.loads(r.body)
            raise AssertionError(f"{address}: {r.status} {r.body[:300]!r} {r.stderr[:300]!r}")
        except (OSError, fastcgi.ProtocolError):
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def through_fpm(conf: Path, address: str, root: Path) -> dict:
    """Run php-fpm in the foreground on `conf`, ask, stop it."""
    proc = subprocess.Popen([FPM, "-F", "-y", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        return ask(address, root, proc)
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(20 * SLOW)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def site_root(env, name: str) -> Path:
    root = env.base / "srv" / name
    root.mkdir(parents=True, exist_ok=True)
    (root / "probe.php").write_text(PROBE)
    for p in (env.base / "srv", root):
        p.chmod(0o755)
    return root


def fpm_main(env, name: str, include: Path) -> Path:
    conf = env.base / f"fpm-{name}.conf"
    conf.write_text(f"[global]\npid = {env.base}/fpm-{name}.pid\n"
                    f"error_log = {env.base}/fpm-{name}.log\ndaemonize = no\n"
                    f"include = {include}\n")
    return conf


def imported_tenant(env, pool_file: Path, *extra: str) -> dict:
    out = env.base / "imported"
    r = env.cli("import", str(pool_file), "--out", str(out), *extra)
    assert "wrote" in r.stdout, r.stdout + r.stderr
    return {p.stem: p for p in out.glob("*.toml")}


@pytest.mark.parametrize("name, user", [("shop", 0), ("api", 1), ("legacy", 2)])
def test_an_imported_pool_serves_with_the_configuration_php_fpm_gave_it(env, users, name,
                                                                        user):
    root = site_root(env, name)
    port = str(free_port())
    text = (POOLS / f"{name}.conf").read_text()
    for k, v in {"USER": users[user], "RUN": str(env.base / "run"),
                 "LOG": str(env.base / "log"), "ROOT": str(root), "PORT": port}.items():
        text = text.replace(f"@{k}@", v)
    pool_file = env.base / f"{name}.conf"
    pool_file.write_text(text)
    address = (f"127.0.0.1:{port}" if name == "api" else
               str(env.base / "run" / ("legacy.sock" if name == "legacy" else f"{name}.sock")))
    fpm = through_fpm(fpm_main(env, name, pool_file), address, root)
    assert fpm["sapi"] == "fpm-fcgi"
    if name == "shop":  # the two levels, as php-fpm has them
        assert fpm["set_user"] and not fpm["set_admin"]
    files = imported_tenant(env, pool_file)
    tenant = "legacy_site" if name == "legacy" else name
    env.add(files[tenant])
    ours = ask(address, root)
    assert ours == fpm
    assert env.status(tenant)["accepted_conn"] >= 1  # the tenant answered, not php-fpm


def test_debians_own_configuration_moves_and_serves(env, tmp_path):
    """Debian's php-fpm.conf and www.conf as shipped, but for where they put their socket,
    pid and log (so the host's php-fpm stays as it is), and the tenant's user, which the
    import makes (www-data is the web server's)."""
    debian = Path("/etc/php/8.2/fpm")
    pool_d = env.base / "pool.d"
    pool_d.mkdir()
    www = (debian / "pool.d" / "www.conf").read_text()
    sock = env.base / "run" / "php8.2-fpm.sock"
    www = re.sub(r"(?m)^listen = .*$", f"listen = {sock}", www)
    (pool_d / "www.conf").write_text(www)
    main = (debian / "php-fpm.conf").read_text()
    main = re.sub(r"(?m)^pid = .*$", f"pid = {env.base}/debian.pid", main)
    main = re.sub(r"(?m)^error_log = .*$", f"error_log = {env.base}/debian.log", main)
    main = re.sub(r"(?m)^include=.*$", f"include={pool_d}/*.conf", main)
    conf = env.base / "php-fpm.conf"
    conf.write_text(main)
    root = site_root(env, "www")
    fpm = through_fpm(conf, str(sock), root)
    had_user = subprocess.run(["id", "www"], capture_output=True).returncode == 0
    added = False
    try:
        files = imported_tenant(env, conf, "--root", f"www={root}", "--create-users")
        env.add(files["www"])
        added = True
        ours = ask(str(sock), root)
        assert ours == fpm
        assert env.status("www")["accepted_conn"] >= 1
    finally:
        if added:
            env.api("DELETE", "/v1/tenants/www")
        if not had_user:  # made by the import: gone with the test
            subprocess.run(["userdel", "www"], capture_output=True)
