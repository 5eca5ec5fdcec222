"""config/safety.py and the registry's clashes: site files that would reach past their
tenant are refused, each with its key (the same cases run live in test_attacks.py)."""

import os
import random

import pytest

from tenantfpm.claims import Claims, clashes
from tenantfpm.config.loader import load_site
from tenantfpm.config.model import PHP_SAPI_BINARY, GlobalConfig
from tenantfpm.config.rules import parse_listen
from tenantfpm.config.tenant import Tenant
from tenantfpm.errors import ConfigError
from tenantfpm.registry import Registry

CONF = GlobalConfig.model_validate({"paths": {"run_dir": "/run/tfpm", "log_dir": "/var/log/tfpm"},
                                    "master": {"control_socket": "/run/tfpm/control.sock"}})


def problems(write_site, system, body, base='name = "shop"\nuser = "alice"\n') -> dict[str, str]:
    try:
        load_site(write_site(base + body), "/nonexistent", system, conf=CONF)
    except ConfigError as e:
        found: dict[str, str] = {}
        for p in e.problems:
            found[p.key] = found.get(p.key, "") + p.message + "; "
        return found
    return {}


@pytest.mark.parametrize("body,key,says", [
    ('root = "/srv/shop"\n', None, None),
    ('root = "/"\n', "root", "the whole host"),
    ('root = "/srv"\n', "root", "/srv itself"),
    ('root = "/srv/shop"\nchdir = "/srv/other"\n', "chdir", "outside"),
    ('root = "/srv/shop"\n[listen]\nmode = "0666"\n', "listen.mode", "every user"),
    ('root = "/srv/shop"\n[log]\ndir = "/srv/shop/logs"\n', "log.dir", "inside the tenant's root"),
    ('root = "/srv/shop"\n[log]\ndir = "/var/log/tfpm"\n', "log.dir", "paths.log_dir itself"),
    ('root = "/srv/shop"\n[isolation]\nbinds = [{ source = "/srv/data", target = "/usr/x" }]\n',
     "isolation.binds[0].target", "cannot mount over"),
    ('root = "/srv/shop"\n[isolation]\nbinds = [{ source = "/run/mysqld", readonly = false }]\n',
     "isolation.binds[0].source", "readonly = true"),
    ('root = "/srv/shop"\n[isolation]\nbinds = [{ source = "/run/tfpm/x", target = "/x" }]\n',
     "isolation.binds[0].source", "master's paths.run_dir"),
    ('root = "/srv/shop"\n[limits]\ncpu = 16\n', "limits.cpu", "more than the host's 4"),
])
def test_host_rules(write_site, fake_system, body, key, says):
    fake_system.exists = lambda path: True
    found = problems(write_site, fake_system, body)
    if key is None:
        assert found == {}
    else:
        assert key in found and says in found[key], found


def test_a_socket_over_the_masters_or_an_existing_file(write_site, fake_system):
    found = problems(write_site, fake_system, 'root = "/srv/shop"\n',
                     base='name = "control"\nuser = "alice"\n')
    assert "master.control_socket" in found["name"]
    fake_system.files = {"/srv/f": "file"}
    found = problems(write_site, fake_system, 'root = "/srv/shop"\n[listen]\naddress = "/srv/f"\n')
    assert "not a socket" in found["listen.address"]


def test_tenant_writable_runtime_and_linked_root(write_site, fake_system):
    fake_system.writable = {PHP_SAPI_BINARY: os.path.dirname(PHP_SAPI_BINARY)}
    fake_system.links = {"/srv/shop": "/srv/shop"}
    found = problems(write_site, fake_system, 'root = "/srv/shop"\n')
    assert "cannot replace" in found["runtime.command"] and "symlink" in found["root"]


def test_system_users_and_the_web_servers_group(write_site, fake_system):
    found = problems(write_site, fake_system, 'root = "/srv/shop"\n',
                     base='name = "shop"\nuser = "www-data"\n')
    assert "system account" in found["user"]
    found = problems(write_site, fake_system, 'group = "www-data"\nroot = "/srv/shop"\n')
    assert "privileged" in found["group"]


def _tenant(name, uid, root, listen=None, log=None):
    site = type("S", (), {})()
    site.name, site.user, site.root = name, f"u{uid}", root
    site.isolation = type("I", (), {"binds": []})()
    site.pm = type("P", (), {"max_children": uid % 5 + 1})()
    return Tenant(site=site, listen=parse_listen(listen or f"/run/tfpm/{name}.sock"),
                  log_dir=log or f"/var/log/tfpm/{name}", run_dir="", uid=uid, gid=uid)


def test_clashes_between_tenants():
    a = _tenant("a", 1, "/srv/a", "127.0.0.1:9001")
    assert clashes(_tenant("b", 2, "/srv/b"), a) == []
    keys = {p.key for p in clashes(_tenant("b", 1, "/srv/a/sub", "0.0.0.0:9001",
                                           "/srv/a/logs"), a)}
    assert keys == {"listen.address", "user", "root", "log.dir"}


def test_the_claims_index_finds_exactly_what_asking_every_tenant_finds():
    """Claims (the O(log N) index behind add and boot) against clashes() asked of every
    tenant, over many random tenants whose paths nest, share and miss each other."""
    rng = random.Random(7)
    dirs = ["/srv", "/srv/a", "/srv/a/b", "/srv/ab", "/srv/b", "/var/log/t", "/var/log/t/x",
            "/", "/srv/a/b/c", "/home/x"]

    def some(i: int) -> Tenant:
        t = _tenant(f"t{i}", rng.randint(1, 40), rng.choice(dirs),
                    rng.choice([None, f"127.0.0.{rng.randint(1, 3)}:{rng.randint(9000, 9005)}",
                                f"0.0.0.0:{rng.randint(9000, 9005)}",
                                f"/run/s{rng.randint(0, 30)}.sock"]),
                    rng.choice([None, *dirs]))
        t.site.isolation.binds = [type("B", (), {"source": rng.choice(dirs)})()
                                  for _ in range(rng.randint(0, 2))]
        return t

    held = [some(i) for i in range(60)]
    claims = Claims(held)
    for t in held[:20]:  # some leave, and some come back under another configuration
        claims.discard(t)
    back = [some(i) for i in range(10)]
    for t in back:
        claims.add(t)
    others = {t.name: t for t in held[20:] + back}
    assert set(claims.tenants) == set(others)
    assert claims.max_children == sum(t.site.pm.max_children for t in others.values())
    for _ in range(300):
        t = some(rng.randint(0, 120))
        want = sorted((p.key, p.message) for o in others.values() if o.name != t.name
                      for p in clashes(t, o))
        assert sorted((p.key, p.message) for p in claims.clashes(t)) == want, t.name
    assert any(claims.clashes(some(i)) for i in range(5))  # the data do clash


def test_load_all_keeps_the_running_tenants_claims(tmp_path, fake_system, monkeypatch):
    conf = GlobalConfig.model_validate({"paths": {"tenants_dir": str(tmp_path)}})
    reg = Registry(conf)
    running = _tenant("hello", 1, "/srv/hello")
    newcomer = _tenant("aaa", 1, "/srv/aaa")  # sorts first, but hello runs
    monkeypatch.setattr(reg, "names", lambda: ["aaa", "hello"])
    monkeypatch.setattr(reg, "load", lambda n, system=None: {"aaa": newcomer, "hello": running}[n])
    ok, bad = reg.load_all(claimed={"hello": running})
    assert list(ok) == ["hello"] and "already runs tenant 'hello'" in str(bad["aaa"])
