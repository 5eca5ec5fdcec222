"""`tenantfpm import`'s effects: php-fpm's configuration read, each pool written as a
site.toml and checked as `tenantfpm check` checks one, the users it needs made on request.

The mapping itself is pure (config/fpm_import.py). Nothing is registered: the operator
reviews the files and runs `tenantfpm add` for each, after stopping php-fpm, whose sockets
the tenants take over (the same paths, so no nginx vhost changes).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from dataclasses import dataclass, field

from tenantfpm.config import fpm_import
from tenantfpm.config.loader import HostSystem, load_site
from tenantfpm.config.model import GlobalConfig
from tenantfpm.config.tenant import resolve
from tenantfpm.errors import ConfigError


def _home(user: str) -> str | None:
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


HOST_USERS = fpm_import.Users(exists=lambda u: _home(u) is not None, home=_home)


@dataclass
class Outcome:
    imported: fpm_import.Imported
    written: list[str] = field(default_factory=list)  # files written (none with --check)
    problems: dict[str, str] = field(default_factory=dict)  # tenant -> check's error text
    created: list[str] = field(default_factory=list)  # users made (--create-users)


def create_user(name: str) -> None:
    """A tenant's own user: a system account with no home and no shell, as the package's
    examples make them."""
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                    "/usr/sbin/nologin", name], check=True, capture_output=True, text=True)


def run(conf: GlobalConfig, path: str, out_dir: str | None, roots: dict[str, str],
        create_users: bool) -> Outcome:
    """Read, convert, (make users,) write into `out_dir` (None: a scratch directory, for
    --check), and check every site file as `tenantfpm check` would."""
    imported = fpm_import.convert(fpm_import.read(path), HOST_USERS, roots)
    outcome = Outcome(imported)
    if create_users:
        for site in imported.sites.values():
            user = str(site["user"])
            if not HOST_USERS.exists(user):
                create_user(user)
                outcome.created.append(user)
    with tempfile.TemporaryDirectory(prefix="tenantfpm-import-") as scratch:
        target = out_dir or scratch
        os.makedirs(target, exist_ok=True)
        system = HostSystem().preload()
        for name, site in imported.sites.items():
            file = os.path.join(target, f"{name}.toml")
            with open(file, "w", encoding="utf-8") as f:
                f.write(fpm_import.toml(site, f"imported from {path} by `tenantfpm import`; "
                                              "review, then `tenantfpm add` it"))
            if out_dir:
                outcome.written.append(file)
            try:
                resolve(load_site(file, conf.paths.profiles_dir, system=system, conf=conf),
                        conf, system)
            except ConfigError as e:
                outcome.problems[name] = str(e).replace(scratch, "<import>")
        if imported.master and out_dir:
            file = os.path.join(target, "tenantfpm.toml.imported")
            with open(file, "w", encoding="utf-8") as f:
                f.write(fpm_import.master_toml(imported.master))
            outcome.written.append(file)
    return outcome
