"""Validation rules beyond types: PHP-FPM's cross-field rules and the system checks.

Pure functions of a parsed Site and a read-only view of the system (users, files),
so every rule can be unit-tested without touching the machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Protocol

from tenantfpm.config import python_ini
from tenantfpm.config.model import PHP_ENGINE_BINARY, Site
from tenantfpm.errors import Problem
from tenantfpm.wire import accessformat

INI_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class System(Protocol):
    def user(self, name: str) -> tuple[int, int] | None: ...  # (uid, primary gid)
    # the user whose name is this number's digits, as far as the system tells cheaply
    def user_named_as(self, uid: int) -> tuple[int, int] | None: ...
    def group(self, name: str) -> int | None: ...
    def is_dir(self, path: str) -> bool: ...
    def is_executable(self, path: str) -> bool: ...
    def exists(self, path: str) -> bool: ...


@dataclass(frozen=True)
class ListenAddress:
    """Where a tenant listens: a Unix socket path, or a TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def parse_listen(address: str) -> ListenAddress:
    """PHP-FPM's listen syntax minus the bare-port form (ambiguous on multi-homed hosts)."""
    if address.startswith("/"):
        if len(address.encode()) > 107:
            raise ValueError(f"unix socket path is longer than 107 bytes: {address}")
        return ListenAddress(path=address)
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", address) or re.match(
        r"^([0-9.]+):(\d+)$", address
    )
    if not m:
        raise ValueError(
            f"invalid listen address {address!r}: use an absolute socket path, "
            "\"127.0.0.1:9001\" or \"[::1]:9001\""
        )
    host, port = m.group(1), int(m.group(2))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid IP address {host!r} in listen address") from None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return ListenAddress(host=host, port=port)


def pm_problems(site: Site) -> list[Problem]:
    """PHP-FPM's pool rules (fpm_conf.c), with its wording."""
    pm, p = site.pm, []
    pool = f"[pool {site.name}]"
    if pm.max_children < 1:
        p.append(Problem("pm.max_children",
                         f"{pool} pm.max_children({pm.max_children}) must be a positive value"))
        return p
    if pm.max_requests < 0:
        p.append(Problem("pm.max_requests",
                         f"{pool} pm.max_requests({pm.max_requests}) must not be negative"))
    if pm.max_requests_jitter < 0:
        p.append(Problem("pm.max_requests_jitter",
                         f"{pool} pm.max_requests_jitter({pm.max_requests_jitter}) "
                         "must not be negative"))
    if pm.mode == "dynamic":
        lo, hi, mx = pm.min_spare_servers, pm.max_spare_servers, pm.max_children
        if lo < 1:
            p.append(Problem("pm.min_spare_servers",
                             f"{pool} pm.min_spare_servers({lo}) must be a positive value"))
        if hi < 1:
            p.append(Problem("pm.max_spare_servers",
                             f"{pool} pm.max_spare_servers({hi}) must be a positive value"))
        if p:
            return p
        if lo > mx or hi > mx:
            p.append(Problem("pm.max_spare_servers" if hi > mx else "pm.min_spare_servers",
                             f"{pool} pm.min_spare_servers({lo}) and pm.max_spare_servers({hi}) "
                             f"cannot be greater than pm.max_children({mx})"))
        elif hi < lo:
            p.append(Problem("pm.max_spare_servers",
                             f"{pool} pm.max_spare_servers({hi}) must not be less than "
                             f"pm.min_spare_servers({lo})"))
        else:
            start = pm.effective_start_servers
            if start < lo or start > hi:
                p.append(Problem("pm.start_servers",
                                 f"{pool} pm.start_servers({start}) must not be less than "
                                 f"pm.min_spare_servers({lo}) and not greater than "
                                 f"pm.max_spare_servers({hi})"))
        if pm.max_spawn_rate < 1:
            p.append(Problem("pm.max_spawn_rate",
                             f"{pool} pm.max_spawn_rate({pm.max_spawn_rate}) "
                             "must be a positive value"))
    if pm.mode == "ondemand" and pm.process_idle_timeout <= 0:
        p.append(Problem("pm.process_idle_timeout",
                         f"{pool} pm.process_idle_timeout({pm.process_idle_timeout:g}s) "
                         "must be greater than 0s"))
    return p


def limits_problems(site: Site) -> list[Problem]:
    lim, p = site.limits, []
    for key in ("cpu", "pids", "open_files"):
        if getattr(lim, key) < 0:
            p.append(Problem(f"limits.{key}", "must not be negative"))
    if lim.slowlog_trace_depth < 1:
        p.append(Problem("limits.slowlog_trace_depth", "must be a positive value"))
    term, slow = lim.request_terminate_timeout, lim.request_slowlog_timeout
    if term > 0 and slow > term:
        p.append(Problem("limits.request_slowlog_timeout",
                         f"'request_slowlog_timeout' ({slow:g}s) can't be greater than "
                         f"'request_terminate_timeout' ({term:g}s)"))
    return p


def runtime_problems(site: Site, system: System) -> list[Problem]:
    rt, p = site.runtime, []
    if not rt.command:
        return [Problem("runtime.command", "must name the program to run")]
    prog = rt.command[0]
    if not os.path.isabs(prog):
        p.append(Problem("runtime.command", f"program must be an absolute path: {prog!r}"))
    elif not system.is_executable(prog):
        p.append(Problem("runtime.command", f"{prog} does not exist or is not executable"))
    if rt.type == "python":
        if not rt.app:
            p.append(Problem("runtime.app", "the python runtime needs the WSGI app to serve, "
                                            "e.g. app = \"mysite.wsgi:application\""))
        elif not python_ini.APP.match(rt.app):
            p.append(Problem("runtime.app", f"not a \"package.module:callable\" name: "
                                            f"{rt.app!r}"))
        if site.log.access:
            try:
                accessformat.parse(site.log.access_format)
            except ValueError as e:
                p.append(Problem("log.access_format", str(e)))
        ini = site.php_ini()
        try:
            python_ini.settings(ini)
        except ValueError as e:
            key, _, why = str(e).partition(": ")
            table = "ini" if key in site.ini else "ini_defaults"
            p.append(Problem(f"{table}.{key}", why) if key in ini else Problem("ini", str(e)))
    elif rt.app:
        p.append(Problem("runtime.app", "only the python runtime takes an app"))
    p += engine_problems(site, system)
    for table, values in (("ini", site.ini), ("ini_defaults", site.ini_defaults)):
        for key, value in values.items():
            if not INI_KEY.match(key):
                p.append(Problem(f"{table}.{key}", "not a valid php.ini directive name"))
            if isinstance(value, str) and ("\n" in value or "\0" in value):
                p.append(Problem(f"{table}.{key}", "value may not contain a newline or NUL"))
    for key, value in site.env.items():
        if not ENV_KEY.match(key):
            p.append(Problem(f"env.{key}", "not a valid environment variable name"))
        if "\0" in value:
            p.append(Problem(f"env.{key}", "value may not contain NUL"))
    return p


def engine_problems(site: Site, system: System) -> list[Problem]:
    """The engine is a choice for the bundled SAPI only; php-cgi's needs its binary, and
    takes LD_PRELOAD for the SAPI itself."""
    rt = site.runtime
    if not (rt.type == "php" and rt.bundled_sapi):
        if "engine" in rt.model_fields_set:
            return [Problem("runtime.engine", "only the php runtime with the bundled SAPI "
                                              "(no runtime.command) has an engine")]
        return []
    if rt.engine != "php-cgi":
        return []
    p = []
    if not system.is_executable(PHP_ENGINE_BINARY):
        p.append(Problem("runtime.engine", f"{PHP_ENGINE_BINARY} is not installed (package "
                                           "php8.2-cgi); or engine = \"libphp\""))
    if "LD_PRELOAD" in site.env:
        p.append(Problem("env.LD_PRELOAD", "the php-cgi engine loads the SAPI through "
                                           "LD_PRELOAD; with engine = \"libphp\" a library of "
                                           "your own may be preloaded"))
    return p


def uid_name_problems(uid: int, system: System) -> list[Problem]:
    """nftables reads every uid of the firewall's set (netguard.py) as a user name first,
    and as a number only when no user has that name: with a user named "1001" whose uid
    is 5000, the set would hold 5000 for the tenant whose uid is 1001, and that tenant
    would reach every tenant's TCP listener."""
    named = system.user_named_as(uid)
    if named is None or named[0] == uid:
        return []
    return [Problem("user", f"another user is named {str(uid)!r} (uid {named[0]}): the "
                            f"firewall that keeps tenants off each other's TCP listeners "
                            f"would take this tenant's uid {uid} for that user's; rename "
                            "that user")]


def identity_problems(site: Site, system: System) -> list[Problem]:
    """The worker identity: never root, and every name must resolve now, not at fork."""
    p = []
    ident = system.user(site.user)
    if ident is None:
        p.append(Problem("user", f"no such user: {site.user!r}"))
    elif site.user == "root" or ident[0] == 0:
        p.append(Problem("user", "workers may not run as root (uid 0)"))
    else:
        p += uid_name_problems(ident[0], system)
    if site.group:
        gid = system.group(site.group)
        if gid is None:
            p.append(Problem("group", f"no such group: {site.group!r}"))
        elif gid == 0:
            p.append(Problem("group", "workers may not run with group root (gid 0)"))
    elif ident is not None and ident[1] == 0:
        p.append(Problem("group", f"the primary group of {site.user!r} is root; name a group"))
    return p


def path_problems(site: Site, system: System) -> list[Problem]:
    p = []
    for key, value in (("root", site.root), ("chdir", site.chdir), ("log.dir", site.log.dir)):
        if value and (not os.path.isabs(value) or ".." in value.split("/")):
            p.append(Problem(key, f"must be an absolute path without '..': {value!r}"))
    if not p and not system.is_dir(site.root):
        p.append(Problem("root", f"{site.root} is not a directory"))
    for i, bind in enumerate(site.isolation.binds):
        p += bind_problems(f"isolation.binds[{i}]", bind.source, bind.target, system)
    return p


RESERVED_TARGETS = ("/proc", "/dev", "/etc/passwd", "/etc/group", "/etc/tenantfpm")


def bind_problems(key: str, source: str, target: str, system: System) -> list[Problem]:
    """An extra mount in the sandbox: from an existing host path, not over what it relies on."""
    p = []
    for name, value in (("source", source), ("target", target)):
        if value and (not os.path.isabs(value) or ".." in value.split("/")):
            p.append(Problem(f"{key}.{name}", f"must be an absolute path without '..': {value!r}"))
    if p:
        return p
    if not system.exists(source):
        p.append(Problem(f"{key}.source", f"{source} does not exist"))
    where = os.path.normpath(target or source)
    if where == "/" or any(where == r or where.startswith(r + "/") for r in RESERVED_TARGETS):
        p.append(Problem(f"{key}.target", f"cannot mount over {where}: the sandbox provides it"))
    return p


def listen_problems(site: Site, system: System) -> list[Problem]:
    lst, p = site.listen, []
    if lst.address:
        try:
            addr = parse_listen(lst.address)
        except ValueError as e:
            return [Problem("listen.address", str(e))]
    else:
        addr = None
    if not re.match(r"^0?[0-7]{3}$", lst.mode):
        p.append(Problem("listen.mode", f"must be an octal mode such as \"0660\": {lst.mode!r}"))
    if lst.backlog < 1:
        p.append(Problem("listen.backlog", "must be a positive value"))
    if addr is None or addr.is_unix:
        if system.user(lst.owner) is None:
            p.append(Problem("listen.owner", f"no such user: {lst.owner!r}"))
        if system.group(lst.group) is None:
            p.append(Problem("listen.group", f"no such group: {lst.group!r}"))
        if lst.allowed_clients:
            p.append(Problem("listen.allowed_clients", "only applies to TCP listeners"))
    for i, client in enumerate(lst.allowed_clients):
        try:
            ipaddress.ip_address(client)
        except ValueError:
            p.append(Problem(f"listen.allowed_clients[{i}]", f"not an IP address: {client!r}"))
    return p


def site_problems(site: Site, system: System) -> list[Problem]:
    return (pm_problems(site) + limits_problems(site) + runtime_problems(site, system)
            + identity_problems(site, system) + path_problems(site, system)
            + listen_problems(site, system))
