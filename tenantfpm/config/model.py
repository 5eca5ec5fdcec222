"""The shape of site.toml and tenantfpm.toml (SPEC 1-2): types and defaults only.

Cross-field and system rules live in rules.py so they can be tested and reported
the way PHP-FPM reports them.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from tenantfpm.units import parse_duration, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
IniValue = str | int | float | bool


def _private_subnet(value: str) -> str:
    net = ipaddress.IPv4Network(value)  # ValueError: reported with the key
    if not net.is_private or net.prefixlen > 30:
        raise ValueError("must be a private IPv4 range of /30 or wider, e.g. 10.213.0.0/16")
    return str(net)


def _relative_cgroup(value: str) -> str:
    parts = value.strip("/").split("/")
    if not value.strip("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("must be a relative cgroup path like 'tenantfpm', without '..'")
    return value.strip("/")


Subnet = Annotated[str, AfterValidator(_private_subnet)]
CgroupPath = Annotated[str, AfterValidator(_relative_cgroup)]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _shared(section: type[Strict]) -> Any:
    """A section's defaults as one frozen instance for every site that leaves the section
    out: pydantic would deep-copy a default instance into each site, and a master with
    10,000 tenants would hold 10,000 copies of the same defaults."""
    instance = section()
    return Field(default_factory=lambda: instance)


class Listen(Strict):
    address: str = ""
    owner: str = "www-data"
    group: str = "www-data"
    mode: str = "0660"
    backlog: int = 511
    allowed_clients: list[str] = []


# the project's PHP SAPI and zygote, built from sapi/ into the package
PHP_SAPI_BINARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "libexec", "tenantfpm-php")
# the PHP the SAPI is built for (php8.2-dev's headers); the php-cgi engine's binary
PHP_VERSION = "8.2"
PHP_ENGINE_BINARY = f"/usr/bin/php-cgi{PHP_VERSION}"
DEFAULT_COMMANDS = {"php": [PHP_SAPI_BINARY], "php-cgi": ["/usr/bin/php-cgi"],
                    "python": ["/usr/bin/python3"]}


class Runtime(Strict):
    type: Literal["php", "php-cgi", "python", "fastcgi"] = "php"
    command: list[str] = [PHP_SAPI_BINARY]
    app: str = ""
    # python: import the app in each worker, not once in the zygote (uWSGI's lazy-apps),
    # for apps that open connections or start threads at import
    lazy_app: bool = False
    # php with the bundled SAPI: whose build of PHP's engine runs under it, Debian's
    # php-cgi binary's or libphp8.2-embed's (sapi/engine.c says why the default)
    engine: Literal["php-cgi", "libphp"] = "php-cgi"

    @property
    def bundled_sapi(self) -> bool:
        """The program is the project's own SAPI (whatever path names it), not one of the
        tenant's: what `engine` and the SAPI's mounts apply to."""
        return bool(self.command) and \
            os.path.realpath(self.command[0]) == os.path.realpath(PHP_SAPI_BINARY)

    @model_validator(mode="before")
    @classmethod
    def _default_command(cls, data: object) -> object:
        """A tenant that names no program gets its type's: the project's SAPI for php,
        the system's php-cgi or python3."""
        if isinstance(data, dict) and "command" not in data and \
                data.get("type") in DEFAULT_COMMANDS:
            return {**data, "command": DEFAULT_COMMANDS[data["type"]]}
        return data


class PM(Strict):
    mode: Literal["static", "dynamic", "ondemand"] = "dynamic"
    max_children: int = 5
    start_servers: int | None = None
    min_spare_servers: int = 1
    max_spare_servers: int = 3
    max_spawn_rate: int = 32
    process_idle_timeout: Duration = 10.0
    # ondemand php tenants: a zygote with no worker left goes after this (0: never); the
    # next request then starts PHP again (docs/performance.md: the memory and wake-up cost)
    zygote_idle_timeout: Duration = 60.0
    max_requests: int = 500
    max_requests_jitter: int = 0
    max_worker_memory: Size = 0
    # the Linux scheduling policy of the tenant's processes: "batch" keeps a woken worker
    # from preempting the web server mid-loop (docs/performance.md, "The scheduling policy")
    scheduling_policy: Literal["batch", "other"] = "batch"

    @property
    def effective_start_servers(self) -> int:
        """PHP-FPM's default: min_spare + (max_spare - min_spare) / 2."""
        if self.start_servers is not None:
            return self.start_servers
        return self.min_spare_servers + (self.max_spare_servers - self.min_spare_servers) // 2


class Limits(Strict):
    memory: Size = 0
    cpu: float = 0
    pids: int = 0
    open_files: int = 0
    core_dumps: bool = False
    request_terminate_timeout: Duration = 0.0
    request_slowlog_timeout: Duration = 0.0
    slowlog_trace_depth: int = 20


class Bind(Strict):
    source: str
    target: str = ""
    readonly: bool = True


class Isolation(Strict):
    enabled: bool = True
    network: Literal["host", "none", "isolated"] = "host"
    hostname: str = ""
    tmp_size: Size = 64 << 20
    hide_processes: bool = True
    binds: list[Bind] = []


class Log(Strict):
    dir: str = ""
    access: bool = False
    access_format: str = '%R - %u %t "%m %r" %s'
    catch_workers_output: bool = True
    # workers' output the master reads per second (bytes); past it the writers wait
    rate_limit: Size = 256 << 10
    # access lines the master reads per second (bytes; 16M: 160,000 lines of 100 bytes)
    access_rate_limit: Size = 16 << 20
    # error.log (access.log) size past which workers' output (access lines) is dropped
    # (counted) until rotation; 0 = none
    max_size: Size = 512 << 20


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_PATTERN = rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$"  # a host name, or *.name


class Site(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    profile: str = ""
    # the site's host names: the nginx server block's server_name (nginx.py)
    domains: list[Annotated[str, Field(pattern=DOMAIN_PATTERN, max_length=253)]] = []
    user: str
    group: str = ""
    root: str
    chdir: str = ""
    listen: Listen = _shared(Listen)
    runtime: Runtime = _shared(Runtime)
    pm: PM = _shared(PM)
    limits: Limits = _shared(Limits)
    isolation: Isolation = _shared(Isolation)
    ini: dict[str, IniValue] = {}
    ini_defaults: dict[str, IniValue] = {}
    env: dict[str, str] = {}
    log: Log = _shared(Log)

    def php_ini(self) -> dict[str, IniValue]:
        """What the tenant's PHP starts with: `ini_defaults` (a script may change them),
        then `ini` (locked), which wins where both name a key."""
        return {**self.ini_defaults, **self.ini}


class Paths(Strict):
    tenants_dir: str = "/etc/tenantfpm/tenants.d"
    profiles_dir: str = "/etc/tenantfpm/profiles"
    run_dir: str = "/run/tenantfpm"
    log_dir: str = "/var/log/tenantfpm"
    state_dir: str = "/var/lib/tenantfpm"


class Master(Strict):
    control_socket: str = "<run_dir>/control.sock"
    # the tenants' users' own socket (status, logs, reload of their tenant; SO_PEERCRED);
    # "" turns it off
    self_service_socket: str = "<run_dir>/self.sock"
    pid_file: str = "<run_dir>/tenantfpm.pid"
    log_file: str = "<log_dir>/master.log"
    log_level: Literal["alert", "error", "warning", "notice", "debug"] = "notice"
    metrics_listen: str = ""
    status_listen: str = ""
    process_max: int = 0
    process_control_timeout: Duration = 30.0
    emergency_restart_threshold: int = 10
    emergency_restart_interval: Duration = 60.0
    cgroup_parent: CgroupPath = "tenantfpm"
    # under systemd with Delegate=yes: <the unit's cgroup>/<cgroup_parent> (the package's
    # unit sets it); elsewhere, or where the hierarchy does not allow it, as if false
    cgroup_delegated: bool = False
    # remount cgroup2 with favordynmods: spawns skip an RCU grace period (cgroups/favor.py);
    # off by default because it changes a setting of the whole host
    cgroup_favordynmods: bool = False
    isolated_subnet: Subnet = "10.213.0.0/16"  # network = "isolated": one /30 per tenant
    # nftables rules keeping every tenant's code off TCP listeners and endpoints (netguard.py)
    tenant_firewall: bool = True
    # a PHP exec'd ahead for the next sandboxed zygote (sandbox/spawner.py): the start of
    # an added or woken tenant skips PHP's exec and the loading of its libraries
    warm_php: bool = True
    # who may read status and metrics besides root: the group of a unix status_listen or
    # metrics_listen socket (mode 0660); on TCP the only group the firewall lets connect
    status_listen_group: str = "root"


class GlobalConfig(Strict):
    paths: Paths = Paths()
    master: Master = Master()
