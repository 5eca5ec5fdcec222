"""One test per validation family: every error names file, key and (when found) line."""

import pytest

from tenantfpm.config import python_ini
from tenantfpm.config.loader import load_global, load_site
from tenantfpm.config.model import PHP_ENGINE_BINARY
from tenantfpm.config.rules import parse_listen
from tenantfpm.config.tenant import resolve
from tenantfpm.errors import ConfigError
from tenantfpm.registry import Registry

BASE = """
name = "shop"
user = "alice"
root = "/srv/shop"
"""


def load(write_site, fake_system, body, profiles_dir="/nonexistent"):
    return load_site(write_site(BASE + body), profiles_dir, fake_system)


def error_of(write_site, fake_system, body, profiles_dir="/nonexistent") -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load(write_site, fake_system, body, profiles_dir)
    return e.value


def test_minimal_site_gets_spec_defaults(write_site, fake_system):
    site = load(write_site, fake_system, "")
    assert site.pm.mode == "dynamic" and site.pm.max_children == 5
    assert site.pm.effective_start_servers == 2
    assert site.isolation.enabled and site.isolation.tmp_size == 64 << 20


def test_toml_syntax_error_has_line_and_column(write_site, fake_system):
    e = error_of(write_site, fake_system, "[pm]\nmax_children = = 3\n")
    assert e.problems[0].line == 5 and e.problems[0].column is not None
    assert "site.toml:5:" in str(e) and "TOML syntax error" in str(e)


def test_unknown_key_suggests_nearest(write_site, fake_system):
    e = error_of(write_site, fake_system, "[pm]\nmax_chilren = 3\n")
    assert "pm.max_chilren: unknown key; did you mean pm.max_children?" in str(e)
    assert e.problems[0].line == 5


def test_wrong_type_names_key_and_value(write_site, fake_system):
    e = error_of(write_site, fake_system, '[pm]\nmax_children = "many"\n')
    assert "pm.max_children" in str(e) and "'many'" in str(e)


def test_scheduling_policy_is_batch_or_other(write_site, fake_system):
    assert load(write_site, fake_system, "").pm.scheduling_policy == "batch"
    e = error_of(write_site, fake_system, '[pm]\nscheduling_policy = "fifo"\n')
    assert "pm.scheduling_policy" in str(e) and "'batch' or 'other'" in str(e), str(e)
    assert e.problems[0].line == 5


def test_bad_units(write_site, fake_system):
    e = error_of(write_site, fake_system, '[limits]\nmemory = "12 parsecs"\n')
    assert "limits.memory" in str(e) and "invalid size" in str(e)


@pytest.mark.parametrize("body,message", [
    ("[pm]\nmax_children = 0", "pm.max_children(0) must be a positive value"),
    ("[pm]\nmax_children = 5\nmin_spare_servers = 4\nmax_spare_servers = 8",
     "pm.min_spare_servers(4) and pm.max_spare_servers(8) cannot be greater than "
     "pm.max_children(5)"),
    ("[pm]\nmin_spare_servers = 3\nmax_spare_servers = 2",
     "pm.max_spare_servers(2) must not be less than pm.min_spare_servers(3)"),
    ("[pm]\nstart_servers = 5\nmax_children = 10",
     "pm.start_servers(5) must not be less than pm.min_spare_servers(1) and not greater "
     "than pm.max_spare_servers(3)"),
    ('[pm]\nmode = "ondemand"\nprocess_idle_timeout = 0',
     "pm.process_idle_timeout(0s) must be greater than 0s"),
    ("[pm]\nmax_spawn_rate = 0", "pm.max_spawn_rate(0) must be a positive value"),
])
def test_php_fpm_pm_rules(write_site, fake_system, body, message):
    e = error_of(write_site, fake_system, body)
    assert f"[pool shop] {message}" in str(e)


def test_slowlog_not_above_terminate(write_site, fake_system):
    e = error_of(write_site, fake_system,
                 '[limits]\nrequest_terminate_timeout = "5s"\nrequest_slowlog_timeout = "10s"')
    assert "limits.request_slowlog_timeout" in str(e)


@pytest.mark.parametrize("user,message", [
    ("root", "may not run as root"), ("toor", "may not run as root"),
    ("nobody-here", "no such user"),
])
def test_user_rules(write_site, fake_system, user, message):
    p = write_site(f'name = "x"\nuser = "{user}"\nroot = "/srv/x"\n')
    with pytest.raises(ConfigError) as e:
        load_site(p, "/nonexistent", fake_system)
    assert "user:" in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("field,value,message", [
    ("name", "../etc", "String should match pattern"),
    ("name", "A" * 40, "String should match pattern"),
    ("root", "srv/rel", "must be an absolute path"),
    ("root", "/srv/../etc", "must be an absolute path"),
    ("root", "/nope", "is not a directory"),
])
def test_names_and_paths(write_site, fake_system, field, value, message):
    fields = {"name": "shop", "user": "alice", "root": "/srv/shop", field: value}
    p = write_site("".join(f'{k} = "{v}"\n' for k, v in fields.items()))
    with pytest.raises(ConfigError) as e:
        load_site(p, "/nonexistent", fake_system)
    assert f"{field}:" in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("address,ok", [
    ("/run/x.sock", True), ("127.0.0.1:9001", True), ("[::1]:9001", True),
    ("relative.sock", False), ("localhost:9001", False), ("127.0.0.1:99999", False),
    ("9001", False),
])
def test_listen_addresses(address, ok):
    if ok:
        assert str(parse_listen(address)) == address
    else:
        with pytest.raises(ValueError):
            parse_listen(address)


def test_allowed_clients_only_for_tcp(write_site, fake_system):
    e = error_of(write_site, fake_system, '[listen]\nallowed_clients = ["127.0.0.1"]')
    assert "only applies to TCP" in str(e)


def test_runtime_command_must_exist(write_site, fake_system):
    e = error_of(write_site, fake_system, '[runtime]\ncommand = ["/usr/bin/php-nope"]')
    assert "runtime.command" in str(e) and "does not exist" in str(e)


@pytest.mark.parametrize("body, message", [
    ('[runtime]\nengine = "zend"\n', "runtime.engine"),
    ('[runtime]\ntype = "php-cgi"\nengine = "libphp"\n',
     "runtime.engine: only the php runtime with the bundled SAPI"),
    ('[runtime]\ncommand = ["/usr/bin/true"]\nengine = "php-cgi"\n',
     "runtime.engine: only the php runtime with the bundled SAPI"),
    ('[env]\nLD_PRELOAD = "/lib/x.so"\n', "env.LD_PRELOAD: the php-cgi engine loads the SAPI"),
])
def test_engine_rules(write_site, fake_system, body, message):
    assert message in str(error_of(write_site, fake_system, body))


def test_engine_binary_must_be_installed(write_site, fake_system, monkeypatch):
    monkeypatch.setattr(type(fake_system), "is_executable",
                        lambda self, p: p != PHP_ENGINE_BINARY)
    e = error_of(write_site, fake_system, "")
    assert f"runtime.engine: {PHP_ENGINE_BINARY} is not installed (package php8.2-cgi)" in str(e)
    site = load(write_site, fake_system, '[runtime]\nengine = "libphp"\n'
                                         '[env]\nLD_PRELOAD = "/lib/x.so"\n')
    assert site.runtime.engine == "libphp"


def test_a_user_named_as_the_tenants_uid_is_refused(write_site, fake_system, monkeypatch):
    """nftables would read uid 1001 as the user "1001" (uid 5000): the tenant would not be
    fenced off the other tenants' TCP listeners."""
    monkeypatch.setattr(type(fake_system), "users", {**fake_system.users, "1001": (5000, 5000)})
    e = error_of(write_site, fake_system, "")
    assert "user: another user is named '1001' (uid 5000)" in str(e)
    monkeypatch.setattr(type(fake_system), "users", {**fake_system.users, "1001": (1001, 1001)})
    assert load(write_site, fake_system, "").user == "alice"  # a name for the same uid


def test_ini_keys_are_checked(write_site, fake_system):
    e = error_of(write_site, fake_system, '[ini]\n"bad key" = 1')
    assert "not a valid php.ini directive name" in str(e)


def test_profile_merges_key_by_key(write_site, fake_system, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "plan.toml").write_text('[pm]\nmode = "static"\nmax_children = 9\n'
                                        '[ini]\nmemory_limit = "64M"\n')
    site = load(write_site, fake_system,
                'profile = "plan"\n[pm]\nmax_children = 3\n[ini]\nupload_max_filesize = "8M"',
                str(profiles))
    assert site.pm.mode == "static" and site.pm.max_children == 3
    assert site.ini == {"memory_limit": "64M", "upload_max_filesize": "8M"}


def test_profile_errors_point_at_the_profile(write_site, fake_system, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "plan.toml").write_text("[pm]\nmax_childs = 9\n")
    e = error_of(write_site, fake_system, 'profile = "plan"', str(profiles))
    assert e.file.endswith("plan.toml") and "did you mean pm.max_children" in str(e)


def test_unknown_profile_lists_available(write_site, fake_system):
    e = error_of(write_site, fake_system, 'profile = "gold"')
    assert "no such profile 'gold'" in str(e) and "basic" in str(e)


def test_shipped_profiles_are_valid(write_site, fake_system):
    for plan in ("basic", "business", "wordpress"):
        site = load(write_site, fake_system, f'profile = "{plan}"')
        assert site.profile == plan


def test_global_config_expands_placeholders(tmp_path):
    g = tmp_path / "g.toml"
    g.write_text(f'[paths]\nrun_dir = "{tmp_path}/run"\n')
    conf = load_global(str(g))
    assert conf.master.control_socket == f"{tmp_path}/run/control.sock"


def test_global_config_errors(tmp_path):
    g = tmp_path / "g.toml"
    g.write_text('[master]\nprocess_contol_timeout = "5s"\n')
    with pytest.raises(ConfigError) as e:
        load_global(str(g))
    assert "did you mean master.process_control_timeout" in str(e.value)
    assert "g.toml:2" in str(e.value)


def test_tenants_may_not_share_user_or_listen(tmp_path):
    """Against the real machine: root's tenants need real users and dirs."""
    g = tmp_path / "g.toml"
    g.write_text(f'[paths]\nrun_dir = "{tmp_path}/run"\ntenants_dir = "{tmp_path}/t"\n')
    conf = load_global(str(g))
    (tmp_path / "a.toml").write_text(f'name = "a"\nuser = "www-data"\nroot = "{tmp_path}"\n')
    (tmp_path / "b.toml").write_text(f'name = "b"\nuser = "www-data"\nroot = "{tmp_path}"\n'
                                     f'[listen]\naddress = "{tmp_path}/run/a.sock"\n')
    a = resolve(load_site(tmp_path / "a.toml", "/nonexistent"), conf)
    b = resolve(load_site(tmp_path / "b.toml", "/nonexistent"), conf)
    with pytest.raises(ConfigError) as e:
        Registry(conf).conflicts(b, [a], "b.toml")
    text = str(e.value)
    assert "already used by tenant 'a'" in text and "already runs tenant 'a'" in text


@pytest.mark.parametrize("key,value,message", [
    ("isolated_subnet", "8.8.0.0/16", "private IPv4 range"),
    ("isolated_subnet", "10.0.0.0/31", "private IPv4 range"),
    ("isolated_subnet", "10.0.0.300/16", "Octet 300 (> 255) not permitted"),
    ("cgroup_parent", "../escape", "without '..'"),
])
def test_global_master_network_and_cgroup_keys(tmp_path, key, value, message):
    g = tmp_path / "g.toml"
    g.write_text(f'[master]\n{key} = "{value}"\n')
    with pytest.raises(ConfigError) as e:
        load_global(str(g))
    assert f"g.toml:2: master.{key}" in str(e.value) and message in str(e.value)


def test_isolation_binds_are_checked(write_site, fake_system):
    e = error_of(write_site, fake_system, """
[[isolation.binds]]
source = "/run/mysqld"
[[isolation.binds]]
source = "/var/nope"
[[isolation.binds]]
source = "/srv/x"
target = "/proc/1"
[[isolation.binds]]
source = "run/rel"
""")
    text = str(e)
    assert "isolation.binds[1].source: /var/nope does not exist" in text
    assert "isolation.binds[2].target: cannot mount over /proc/1" in text
    assert "isolation.binds[3].source: must be an absolute path" in text
    assert "binds[0]" not in text


def test_master_refuses_to_run_without_root(tmp_path, monkeypatch, capsys):
    import os
    import sys

    from tenantfpm.cli import main

    g = tmp_path / "g.toml"
    g.write_text(f'[paths]\nrun_dir = "{tmp_path}/run"\n')
    monkeypatch.setenv("TENANTFPM_CONFIG", str(g))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "argv", ["tenantfpm", "run"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 1
    assert "the master must run as root" in capsys.readouterr().err


PY = '[runtime]\ntype = "python"\napp = "shop.wsgi:application"\n'


def test_python_runtime_defaults_to_the_system_interpreter(write_site, fake_system):
    site = load(write_site, fake_system, PY + '[ini]\npost_max_size = "8M"\n'
                'upload_max_filesize = "2M"\nmemory_limit = "-1"\ndisplay_errors = "On"\n')
    assert site.runtime.command == ["/usr/bin/python3"]
    assert python_ini.settings(dict(site.ini)) == {
        "memory_limit": 0, "body_limit": 2 << 20, "display_errors": True}


@pytest.mark.parametrize("body, message", [
    ('[runtime]\ntype = "python"\n', "runtime.app: the python runtime needs the WSGI app"),
    ('[runtime]\ntype = "python"\napp = "shop wsgi"\n', "not a \"package.module:callable\""),
    (PY + '[ini]\n"opcache.enable" = 1\n', "ini: not supported by the python runtime: "
     "opcache.enable; supported: memory_limit, max_execution_time"),
    (PY + '[ini]\nmemory_limit = "lots"\n', "ini.memory_limit: invalid size 'lots'"),
    (PY + '[ini]\n"date.timezone" = "Mars/Olympus"\n', "unknown time zone 'Mars/Olympus'"),
    (PY + '[ini]\ndisplay_errors = "sometimes"\n', "expected On or Off"),
    (PY + '[ini]\nerror_log = "logs/err.log"\n', "must be an absolute path"),
    (PY + '[log]\naccess = true\naccess_format = "%R %Z"\n',
     "log.access_format: unknown access_format code '%Z'"),
    ('[runtime]\napp = "x:y"\n', "only the python runtime takes an app"),
])
def test_python_runtime_rules(write_site, fake_system, body, message):
    assert message in str(error_of(write_site, fake_system, body))


@pytest.fixture
def counted_lookups(monkeypatch):
    """The names getpwnam and getgrnam are asked for, the real answers returned."""
    import grp
    import pwd

    asked: list[str] = []
    real_pw, real_gr = pwd.getpwnam, grp.getgrnam
    monkeypatch.setattr(pwd, "getpwnam", lambda n: asked.append(n) or real_pw(n))
    monkeypatch.setattr(grp, "getgrnam", lambda n: asked.append("group:" + n) or real_gr(n))
    return asked


def test_host_system_looks_each_name_up_once(counted_lookups):
    """An add asks for its user from several rules; on a host with 10,000 users each
    getpwnam of a recent one reads all of /etc/passwd."""
    from tenantfpm.config.loader import HostSystem

    system = HostSystem()
    for _ in range(3):
        assert system.user("root") == (0, 0)
        assert system.user("no-such-user-tfpm") is None
        assert system.group("root") == 0
        assert system.group_name(0) == "root"
    assert counted_lookups == ["root", "no-such-user-tfpm", "group:root"]
    assert HostSystem().user("root") == (0, 0)  # a new operation asks again
    assert counted_lookups[-1] == "root"


def test_a_preloaded_host_system_asks_only_for_names_not_enumerated(counted_lookups):
    from tenantfpm.config.loader import HostSystem

    system = HostSystem().preload()
    assert system.user("root") == (0, 0) and system.group("root") == 0
    assert system.user("no-such-user-tfpm") is None
    assert counted_lookups == ["no-such-user-tfpm"]
    # the firewall's name check, once per tenant: enumerated names only, no lookup
    assert system.user_named_as(4242424) is None
    assert counted_lookups == ["no-such-user-tfpm"]
    assert HostSystem().user_named_as(4242424) is None  # one add asks
    assert counted_lookups[-1] == "4242424"


def test_ini_defaults_keys_are_checked_as_ini_keys(write_site, fake_system):
    e = error_of(write_site, fake_system, '[ini_defaults]\n"bad key" = 1')
    assert "ini_defaults.bad key" in str(e) and "not a valid php.ini directive name" in str(e)
