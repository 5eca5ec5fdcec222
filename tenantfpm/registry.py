"""Registered tenants: one <name>.toml in tenants_dir each, written atomically.

The file is a copy of the site.toml that was added, so the registration does
not depend on where the original lives; its profile is resolved at each load.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tenantfpm.config.loader import load_site
from tenantfpm.config.model import GlobalConfig, Site
from tenantfpm.config.tenant import Tenant, resolve
from tenantfpm.errors import ConfigError, Problem


class Registry:
    def __init__(self, conf: GlobalConfig) -> None:
        self.conf = conf
        self.dir = Path(conf.paths.tenants_dir)

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.toml"

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.toml"))

    def load(self, name: str) -> Tenant:
        site = load_site(self.path(name), self.conf.paths.profiles_dir)
        if site.name != name:
            raise ConfigError(str(self.path(name)), [Problem(
                "name", f"the file is registered as {name!r} but names {site.name!r}")])
        return resolve(site, self.conf)

    def load_all(self) -> tuple[dict[str, Tenant], dict[str, ConfigError]]:
        ok, bad = {}, {}
        for name in self.names():
            try:
                ok[name] = self.load(name)
            except ConfigError as e:
                bad[name] = e
        return ok, bad

    def conflicts(self, tenant: Tenant, others: list[Tenant], file: str) -> None:
        """Name, listen address and user are each one tenant's alone."""
        problems = []
        for o in others:
            if o.name == tenant.name:
                continue
            if str(o.listen) == str(tenant.listen):
                problems.append(Problem("listen.address",
                                        f"{tenant.listen} is already used by tenant {o.name!r}"))
            if o.site.user == tenant.site.user or o.uid == tenant.uid:
                problems.append(Problem("user", f"user {tenant.site.user!r} already runs "
                                                f"tenant {o.name!r}; each tenant needs its own"))
        if problems:
            raise ConfigError(file, problems)

    def read_text(self, name: str) -> str | None:
        try:
            return self.path(name).read_text()
        except FileNotFoundError:
            return None

    def write(self, name: str, text: str) -> None:
        """temp + fsync + rename: a reader sees the old file or the new one, never half."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        target = self.path(name)
        tmp = target.with_name(f".{name}.toml.tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, target)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()

    def restore(self, name: str, previous: str | None) -> None:
        """Undo a write: the old file back, or no file at all."""
        if previous is None:
            self.remove(name)
        else:
            self.write(name, previous)


def validate_for_add(conf: GlobalConfig, path: str, others: list[Tenant],
                     replace: bool) -> tuple[Site, Tenant, str]:
    """Everything `add` checks before it writes anything."""
    reg = Registry(conf)
    site = load_site(path, conf.paths.profiles_dir)
    tenant = resolve(site, conf)
    if not replace and reg.path(site.name).exists():
        raise ConfigError(path, [Problem("name", f"tenant {site.name!r} is already registered; "
                                                 "use --replace to update it")])
    reg.conflicts(tenant, others, path)
    with open(path) as f:
        text = f.read()
    return site, tenant, text
