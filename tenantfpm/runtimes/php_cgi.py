"""php-cgi exec'd per worker, serving FastCGI on its inherited fd 0 (`type = "php-cgi"`).

The runtime tenantfpm had before its own SAPI (runtimes/php.py): kept for hosts
that need the stock binary. Each worker is a fresh exec with its own opcache;
the master sees it through /proc and reads its request from its memory.
"""

from __future__ import annotations

import os
import re

from tenantfpm import inspect
from tenantfpm.config.model import PHP_VERSION, IniValue
from tenantfpm.config.tenant import Tenant
from tenantfpm.runtimes.base import Runtime, worker_env
from tenantfpm.sandbox import state
from tenantfpm.sandbox.rootfs import INI_TARGET


def ini_value(value: IniValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def system_ini(binary: str, sapis: tuple[str, ...] = ("cgi",)) -> str | None:
    """The distribution's php.ini for this PHP (Debian: /etc/php/X.Y/<sapi>/php.ini), the
    first of `sapis` that exists."""
    m = re.search(r"(\d+\.\d+)$", os.path.basename(binary))
    version = m.group(1) if m else PHP_VERSION
    for sapi in sapis:
        candidate = f"/etc/php/{version}/{sapi}/php.ini"
        if os.path.isfile(candidate):
            return candidate
    return None


def ini_path(tenant: Tenant) -> str:
    return os.path.join(tenant.run_dir, "php.ini")


def session_dir(tenant: Tenant) -> str:
    """The tenant's own, persistent session directory (made if missing), as its workers
    see it: at Debian's place inside the sandbox, the host path without one."""
    host = state.prepare_sessions(tenant)
    return state.SESSIONS_INSIDE if tenant.site.isolation.enabled else host


def session_binds(tenant: Tenant) -> list[tuple[str, str, bool]]:
    if not tenant.site.isolation.enabled or not tenant.state_dir:
        return []
    return [(os.path.join(tenant.state_dir, state.SESSIONS), state.SESSIONS_INSIDE, False)]


def write_ini(tenant: Tenant, base: str | None, sessions: str | None = None) -> str:
    """The tenant's php.ini: the system one (`base`), then its overrides, readable by its
    workers (root:<its group> 0640) and no other user.

    Always passed with -c so php-cgi never picks up a php.ini from its working
    directory (the tenant's own files). `sessions`: session.save_path, a directory that
    outlives the workers; PHP collects old sessions there itself (Debian's php.ini turns
    that off for a cron job that never sees a tenant's directory).
    """
    parts = []
    if base:
        with open(base) as f:
            parts.append(f.read())
    parts.append(f"\n; tenantfpm overrides for tenant {tenant.name}\n[PHP]\n")
    if sessions:
        parts.append(f'session.save_path = "{sessions}"\nsession.gc_probability = 1\n')
    elif tenant.site.isolation.enabled:  # the distribution's session dir is not in the sandbox
        parts.append("session.save_path = /tmp\n")
    for k, v in tenant.site.php_ini().items():
        parts.append(f"{k} = {ini_value(v)}\n")
    # root's and the tenant's alone: `[ini]` holds secrets (mysqli.default_pw, a session
    # store's password, licence keys); the directories let a tenant's workers through to
    # their own file without listing anyone's
    os.makedirs(tenant.run_dir, mode=0o711, exist_ok=True)
    for d in (os.path.dirname(tenant.run_dir), tenant.run_dir):
        os.chmod(d, 0o711)
    path = ini_path(tenant)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with open(fd, "w") as f:
        os.fchown(fd, 0, tenant.gid)
        os.fchmod(fd, 0o640)
        f.write("".join(parts))
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
    env = worker_env(tenant)
    env["PHP_FCGI_MAX_REQUESTS"] = str(max_requests)
    env.pop("PHP_FCGI_CHILDREN", None)  # the worker must serve requests itself
    return argv, env


class PhpCgi(Runtime):
    """php-cgi: observed from /proc, its request and stack read from its memory."""

    type = "php-cgi"

    def prepare(self, tenant: Tenant) -> None:
        write_ini(tenant, system_ini(os.path.realpath(tenant.site.runtime.command[0])),
                  session_dir(tenant) if tenant.state_dir else None)

    def binds(self, tenant: Tenant) -> list[tuple[str, str, bool]]:
        return session_binds(tenant)

    def command(self, tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
        return command(tenant, max_requests)

    def ini_source(self, tenant: Tenant) -> str | None:
        return ini_path(tenant)

    def inspect(self, pid: int, exe: str, depth: int) -> inspect.PhpState:
        return inspect.read_state(pid, exe, depth)
