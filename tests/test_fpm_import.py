"""`tenantfpm import`'s mapping (config/fpm_import.py): php-fpm's configuration to site
files, every directive with its fate, nothing dropped silently."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from tenantfpm.config import fpm_import as fi
from tenantfpm.config.model import GlobalConfig, Site

POOLS = Path(__file__).parent / "fpm_pools"
DEBIAN = "/etc/php/8.2/fpm/php-fpm.conf"
NOBODY = fi.Users(exists=lambda u: False, home=lambda u: None)


def pool(tmp_path: Path, name: str, **fill: str) -> Path:
    text = (POOLS / f"{name}.conf").read_text()
    values = {"USER": "alice", "RUN": "/run/t", "LOG": "/var/log/t", "ROOT": "/srv/x",
              "PORT": "9123", **fill}
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    out = tmp_path / f"{name}.conf"
    out.write_text(text)
    return out


def imported(path: Path) -> fi.Imported:
    return fi.convert(fi.read(str(path)), NOBODY)


def directives(path: Path) -> list[tuple[str, int]]:
    """Every `directive = value` line of a file: each must have its row."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if s and s[0] not in ";#[" and "=" in s:
            out.append((s.split("=", 1)[0].strip(), n))
    return out


@pytest.mark.parametrize("name", ["shop", "api", "legacy"])
def test_every_directive_has_its_fate_and_the_site_is_valid(tmp_path, name):
    path = pool(tmp_path, name)
    out = imported(path)
    seen = {(r.directive, int(r.where.rsplit(":", 1)[1])) for r in out.rows if r.where}
    assert set(directives(path)) <= seen  # nothing dropped silently
    assert all(r.verdict in (fi.AS_IS, fi.CHANGED, fi.NOT_CARRIED) for r in out.rows)
    assert all(r.why for r in out.rows if r.verdict != fi.AS_IS)  # a reason for each change
    (site,) = out.sites.values()
    text = fi.toml(site, "header")
    Site.model_validate(tomllib.loads(text))  # the model takes what was written


def test_a_dynamic_pools_values_go_to_their_keys(tmp_path):
    out = imported(pool(tmp_path, "shop"))
    site = out.sites["shop"]
    assert site["listen"]["address"] == "/run/t/shop.sock"  # $pool expanded, path kept
    assert site["pm"] == {"mode": "dynamic", "max_children": 6, "start_servers": 2,
                          "min_spare_servers": 1, "max_spare_servers": 3, "max_requests": 200}
    assert site["limits"] == {"request_terminate_timeout": "120s",
                              "request_slowlog_timeout": "5s"}
    assert site["ini"] == {"memory_limit": "192M", "log_errors": True,  # locked
                           "disable_functions": "exec,passthru,shell_exec"}
    assert site["ini_defaults"] == {"upload_max_filesize": "32M", "post_max_size": "33M",
                                    "display_errors": False,
                                    "date.timezone": "Europe/Amsterdam"}  # a script's to change
    assert site["env"] == {"SHOP_ENV": "production", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    assert site["log"]["access"] is True and site["log"]["catch_workers_output"] is True
    assert site["log"]["access_format"].startswith('%R - %u %t "%m %r%Q%q"')
    assert site["root"] == "/srv/x" and site["chdir"] == "/srv/x"
    fate = {r.directive: r for r in out.rows}
    assert fate["php_value[upload_max_filesize]"].to == "ini_defaults.upload_max_filesize"
    assert fate["php_admin_value[memory_limit]"].to == "ini.memory_limit"
    assert fate["slowlog"].verdict == fi.CHANGED and "log directory" in fate["slowlog"].why
    assert fate["group"].verdict == fi.AS_IS and site["group"] == "alice"


def test_an_ondemand_tcp_pool_keeps_its_clients_and_limits(tmp_path):
    out = imported(pool(tmp_path, "api"))
    site = out.sites["api"]
    assert site["listen"] == {"address": "127.0.0.1:9123", "allowed_clients": ["127.0.0.1"],
                              "backlog": 1024}
    assert site["pm"]["mode"] == "ondemand" and site["pm"]["process_idle_timeout"] == "20s"
    assert site["limits"] == {"open_files": 2048, "core_dumps": False}
    fate = {r.directive: r for r in out.rows}
    assert fate["security.limit_extensions"].verdict == fi.NOT_CARRIED
    assert fate["clear_env"].verdict == fi.NOT_CARRIED and "clear_env = yes" in fate[
        "clear_env"].why


def test_what_tenantfpm_does_otherwise_is_said(tmp_path):
    out = imported(pool(tmp_path, "legacy"))
    (name,) = out.sites
    assert name == "legacy_site"  # a tenant's name: lowercase
    site = out.sites[name]
    assert site["listen"]["mode"] == "0660"  # never open to every user
    assert site["pm"]["max_requests"] == 0 and site["log"]["catch_workers_output"] is False
    fate = {r.directive: r for r in out.rows}
    assert fate["listen.mode"].verdict == fi.CHANGED
    for gone in ("pm.status_path", "ping.path", "ping.response", "process.priority"):
        assert fate[gone].verdict == fi.NOT_CARRIED and fate[gone].why, gone
    assert fate["[Legacy_Site]"].to == "name"
    assert fate["(default) pm.max_requests"].verdict == fi.CHANGED


def test_service_accounts_give_way_to_a_user_of_the_tenants_own(tmp_path):
    conf = tmp_path / "p.conf"
    conf.write_text("[site]\nuser = www-data\ngroup = www-data\nlisten = 9000\n"
                    "listen.group = www-data\nchdir = /\n")
    out = imported(conf)
    site = out.sites["site"]
    assert site["user"] == "site" and "group" not in site
    assert site["listen"]["address"] == "0.0.0.0:9000"  # a bare port: every address
    fate = {r.directive: r for r in out.rows}
    assert "useradd" in fate["user"].why and fate["group"].verdict == fi.NOT_CARRIED
    assert fate["chdir"].verdict == fi.NOT_CARRIED
    # no root anywhere: said, with how to give one
    roots = [r for r in out.rows if r.directive == "(root)"]
    if os.path.isdir("/var/www"):
        assert site["root"] == "/var/www" and roots[0].verdict == fi.CHANGED
    else:
        assert "root" not in site and roots[0].verdict == fi.NOT_CARRIED
    given = fi.convert(fi.read(str(conf)), NOBODY, {"site": "/srv/site"})
    assert given.sites["site"]["root"] == "/srv/site"


def test_includes_the_global_section_and_a_pool_directory(tmp_path):
    d = tmp_path / "pool.d"
    d.mkdir()
    pool(d, "shop")
    pool(d, "api")
    main = tmp_path / "php-fpm.conf"
    main.write_text("[global]\npid = /run/php/x.pid\nerror_log = /var/log/x.log\n"
                    "log_level = notice\nemergency_restart_threshold = 10\n"
                    "emergency_restart_interval = 1m\nprocess_control_timeout = 10s\n"
                    "daemonize = no\ninclude = pool.d/*.conf\n")
    out = imported(main)
    assert set(out.sites) == {"api", "shop"}
    assert out.master == {"master.log_level": "notice",
                          "master.emergency_restart_threshold": 10,
                          "master.emergency_restart_interval": "1m",
                          "master.process_control_timeout": "10s"}
    text = fi.master_toml(out.master)
    GlobalConfig.model_validate(tomllib.loads(text))
    assert set(fi.convert(fi.read(str(d)), NOBODY).sites) == {"api", "shop"}
    fate = {r.directive: r for r in out.rows if not r.pool}
    assert fate["pid"].verdict == fate["daemonize"].verdict == fi.NOT_CARRIED


def test_a_file_php_fpm_would_refuse_is_an_error_that_names_the_line(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[www]\nuser = alice\nthis is not a directive\n")
    with pytest.raises(fi.FpmConfigError, match=r"bad.conf:3: not `directive = value`"):
        fi.read(str(bad))


@pytest.mark.skipif(not os.path.exists(DEBIAN), reason="php8.2-fpm is not installed")
def test_debians_own_configuration(tmp_path):
    out = fi.convert(fi.read(DEBIAN), NOBODY)
    site = out.sites["www"]
    assert site["listen"]["address"] == "/run/php/php8.2-fpm.sock"  # nginx needs no change
    assert site["user"] == "www" and site["pm"]["mode"] == "dynamic"
    Site.model_validate(tomllib.loads(fi.toml(site)))
