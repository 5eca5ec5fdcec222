"""php-cgi serving FastCGI on its inherited fd 0 (DESIGN "php-cgi as the PHP worker")."""

from __future__ import annotations

import os
import re

from tenantfpm import inspect
from tenantfpm.config.model import IniValue
from tenantfpm.config.tenant import Tenant
from tenantfpm.runtimes.base import Runtime
from tenantfpm.sandbox.rootfs import INI_TARGET


def ini_value(value: IniValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def system_ini(binary: str) -> str | None:
    """The distribution's php.ini for this php-cgi (Debian: /etc/php/X.Y/cgi/php.ini)."""
    m = re.search(r"(\d+\.\d+)$", os.path.basename(binary))
    if m:
        candidate = f"/etc/php/{m.group(1)}/cgi/php.ini"
        if os.path.isfile(candidate):
            return candidate
    return None


def ini_path(tenant: Tenant) -> str:
    return os.path.join(tenant.run_dir, "php.ini")


def write_ini(tenant: Tenant) -> str:
    """The tenant's php.ini: the system one, then its overrides, readable by its workers.

    Always passed with -c so php-cgi never picks up a php.ini from its working
    directory (the tenant's own files).
    """
    binary = os.path.realpath(tenant.site.runtime.command[0])
    parts = []
    base = system_ini(binary)
    if base:
        with open(base) as f:
            parts.append(f.read())
    parts.append(f"\n; tenantfpm overrides for tenant {tenant.name}\n[PHP]\n")
    if tenant.site.isolation.enabled:  # the distribution's session dir is not in the sandbox
        parts.append("session.save_path = /tmp\n")
    for k, v in tenant.site.ini.items():
        parts.append(f"{k} = {ini_value(v)}\n")
    os.makedirs(tenant.run_dir, mode=0o755, exist_ok=True)
    path = ini_path(tenant)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(parts))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def command(tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
    rt = tenant.site.runtime
    binary = os.path.realpath(rt.command[0])  # through /etc/alternatives
    ini = INI_TARGET if tenant.site.isolation.enabled else ini_path(tenant)
    argv = [binary, "-c", ini]
    for k, v in tenant.site.ini.items():
        argv += ["-d", f"{k}={ini_value(v)}"]
    argv += rt.command[1:]
    env = dict(tenant.site.env)
    env["PHP_FCGI_MAX_REQUESTS"] = str(max_requests)
    env.pop("PHP_FCGI_CHILDREN", None)  # the worker must serve requests itself
    return argv, env


class Php(Runtime):
    """php-cgi: observed from /proc, its request and stack read from its memory."""

    type = "php"

    def prepare(self, tenant: Tenant) -> None:
        write_ini(tenant)

    def command(self, tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
        return command(tenant, max_requests)

    def ini_source(self, tenant: Tenant) -> str | None:
        return ini_path(tenant)

    def inspect(self, pid: int, exe: str, depth: int) -> inspect.PhpState:
        return inspect.read_state(pid, exe, depth)
