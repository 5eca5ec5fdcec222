"""Registered tenants: one <name>.toml in tenants_dir each, written atomically.

The file is a copy of the site.toml that was added, so the registration does
not depend on where the original lives; its profile is resolved at each load.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from tenantfpm.claims import Claims
from tenantfpm.config.loader import HostSystem, find_line, load_site
from tenantfpm.config.model import NAME_PATTERN, GlobalConfig, Site
from tenantfpm.config.tenant import Tenant, resolve
from tenantfpm.errors import ConfigError, Problem, TenantFPMError

NAME = re.compile(NAME_PATTERN)


class Registry:
    def __init__(self, conf: GlobalConfig) -> None:
        self.conf = conf
        self.dir = Path(conf.paths.tenants_dir)

    def path(self, name: str) -> Path:
        if not NAME.fullmatch(name):  # a name is never a path, whoever passes it
            raise TenantFPMError(f"not a tenant name: {name!r}")
        return self.dir / f"{name}.toml"

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.toml") if NAME.fullmatch(p.stem))

    def load(self, name: str, system: HostSystem | None = None) -> Tenant:
        system = system or HostSystem()
        site = load_site(self.path(name), self.conf.paths.profiles_dir, system=system,
                         conf=self.conf)
        if site.name != name:
            raise ConfigError(str(self.path(name)), [Problem(
                "name", f"the file is registered as {name!r} but names {site.name!r}")])
        return resolve(site, self.conf, system)

    def load_all(self, claimed: dict[str, Tenant] | None = None,
                 system: HostSystem | None = None
                 ) -> tuple[dict[str, Tenant], dict[str, ConfigError]]:
        """Every registered tenant that is valid and conflicts with none loaded before it.

        `claimed`: the tenants running now, with the configuration they run. They are
        checked first and keep what they hold: a file dropped in later that takes a
        running tenant's socket, user or root is refused, not the running tenant.
        """
        claimed = claimed or {}
        loaded, bad = {}, {}
        system = system or HostSystem().preload()
        for name in self.names():
            try:
                loaded[name] = self.load(name, system)
            except ConfigError as e:
                bad[name] = e
        ok: dict[str, Tenant] = {}
        holders = Claims(claimed.values())  # then each accepted file in place of its name's
        for name in sorted(loaded, key=lambda n: (n not in claimed, n)):
            try:
                self.conflicts(loaded[name], holders, str(self.path(name)))
            except ConfigError as e:
                bad[name] = e
                continue
            ok[name] = loaded[name]
            holders.add(loaded[name])
        return ok, bad

    def conflicts(self, tenant: Tenant, others: Claims | list[Tenant], file: str) -> None:
        """What must be one tenant's alone: name, socket, user, root, log directory.
        `others`: the running tenants (a tenant of `tenant`'s name is not an other)."""
        if not isinstance(others, Claims):
            others = Claims(others)
        problems = others.clashes(tenant)
        if problems:
            try:
                text = Path(file).read_text()
            except (OSError, UnicodeDecodeError):
                text = ""
            for pr in problems:
                pr.line = find_line(text, pr.key)
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
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()

    def restore(self, name: str, previous: str | None) -> None:
        """Undo a write: the old file back, or no file at all."""
        if previous is None:
            self.remove(name)
        else:
            self.write(name, previous)


def validate_for_add(conf: GlobalConfig, path: str, others: Claims | list[Tenant],
                     replace: bool, system: HostSystem | None = None
                     ) -> tuple[Site, Tenant, str]:
    """Everything `add` checks before it writes anything. `system`: the operation's, if
    it has looked users up already (the CLI, which loaded the registry first)."""
    reg = Registry(conf)
    system = system or HostSystem()
    site = load_site(path, conf.paths.profiles_dir, system=system, conf=conf)
    tenant = resolve(site, conf, system)
    if not replace and reg.path(site.name).exists():
        raise ConfigError(path, [Problem("name", f"tenant {site.name!r} is already registered; "
                                                 "use --replace to update it")])
    reg.conflicts(tenant, others, path)
    with open(path) as f:
        text = f.read()
    return site, tenant, text
