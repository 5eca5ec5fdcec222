"""A registered tenant resolved against the global config: everything the master needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tenantfpm.config.loader import HostSystem
from tenantfpm.config.model import GlobalConfig, Site
from tenantfpm.config.rules import ListenAddress, parse_listen


@dataclass(frozen=True)
class Tenant:
    site: Site
    listen: ListenAddress
    log_dir: str
    run_dir: str  # per-tenant generated files (php.ini)
    uid: int
    gid: int
    group_name: str = ""
    state_dir: str = ""  # what outlives the master: PHP sessions (sandbox/state.py)

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def cwd(self) -> str:
        return self.site.chdir or self.site.root


def resolve(site: Site, conf: GlobalConfig, system: HostSystem | None = None) -> Tenant:
    """`system`: the one the site was validated with, whose lookups are remembered."""
    sysview = system or HostSystem()
    ident = sysview.user(site.user)
    assert ident is not None, "validated before resolve"
    gid = sysview.group(site.group) if site.group else ident[1]
    assert gid is not None
    address = site.listen.address or os.path.join(conf.paths.run_dir, f"{site.name}.sock")
    return Tenant(
        site=site,
        listen=parse_listen(address),
        log_dir=site.log.dir or os.path.join(conf.paths.log_dir, site.name),
        run_dir=os.path.join(conf.paths.run_dir, "tenants", site.name),
        uid=ident[0],
        gid=gid,
        group_name=site.group or sysview.group_name(gid) or str(gid),
        state_dir=os.path.join(conf.paths.state_dir, "tenants", site.name),
    )
