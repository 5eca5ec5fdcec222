"""docs/site-toml.md, generated from the config model so that it cannot drift.

Types and defaults come from model.py itself; what each key means, its PHP-FPM
equivalent and an example come from DOCS below. Every key of the model must have an
entry and every entry a key (`render` raises otherwise), and tests/test_reference.py
fails when the committed file differs from what `render()` gives:
`.venv/bin/python -m tenantfpm.config.reference > docs/site-toml.md` writes it anew.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tenantfpm.config.model import PHP_SAPI_BINARY, GlobalConfig, Site
from tenantfpm.units import format_size, parse_duration, parse_size

# key -> (PHP-FPM's equivalent or "", what it does, an example value in TOML)
DOCS: dict[str, tuple[str, str, str]] = {
    # --- site.toml ---------------------------------------------------------------------
    "name": ("`[pool]` section name", "The tenant's name: its socket, logs, cgroup and "
             "status are named after it. `^[a-z0-9][a-z0-9_-]{0,31}$`, unique.", '"shop"'),
    "profile": ("", "A profile (`profiles_dir`, then the shipped `basic`, `business`, "
                "`wordpress`) whose keys this file overrides, table by table.", '"business"'),
    "domains": ("", "The site's host names: `server_name` of the nginx block `add` "
                "prints. Not used for routing by tenantfpm itself.",
                '["shop.example", "www.shop.example"]'),
    "user": ("`user`", "The Unix user the workers run as; never root, never a service "
             "account, one tenant's alone.", '"shop"'),
    "group": ("`group`", "The workers' group; the user's primary group when empty.",
              '"shop"'),
    "root": ("`chroot` (roughly)", "The tenant's files, visible read-write in its "
             "sandbox at the same path.", '"/srv/tenants/shop"'),
    "chdir": ("`chdir`", "The workers' working directory; `root` when empty.",
              '"/srv/tenants/shop/public"'),
    "listen.address": ("`listen`", "The FastCGI socket: a path, `host:port` or "
                       "`[::1]:port`; `<run_dir>/<name>.sock` when empty.",
                       '"127.0.0.1:9001"'),
    "listen.owner": ("`listen.owner`", "Owner of a Unix socket.", '"www-data"'),
    "listen.group": ("`listen.group`", "Group of a Unix socket.", '"www-data"'),
    "listen.mode": ("`listen.mode`", "Mode of a Unix socket; never open to every user.",
                    '"0660"'),
    "listen.backlog": ("`listen.backlog`", "The listen queue's length.", "511"),
    "listen.allowed_clients": ("`listen.allowed_clients`", "TCP only: the client "
                               "addresses accepted (in the kernel); empty: any.",
                               '["127.0.0.1"]'),
    "runtime.type": ("", "`php` (the project's SAPI, workers forked from a per-tenant "
                     "zygote), `php-cgi` (stock php-cgi exec'd per worker), `python` "
                     "(a WSGI app), `fastcgi` (any program accepting on fd 0).", '"php"'),
    "runtime.command": ("", "The program: php's default is the bundled SAPI, php-cgi's "
                        "`/usr/bin/php-cgi`, python's `/usr/bin/python3`.",
                        '["/srv/tenants/blog/venv/bin/python"]'),
    "runtime.app": ("", "python: the WSGI callable, `module:callable`.",
                    '"blog.wsgi:application"'),
    "runtime.lazy_app": ("", "python: import the app in each worker instead of once in "
                         "the zygote (uWSGI's lazy-apps), for apps that connect or start "
                         "threads at import.", "true"),
    "runtime.engine": ("", "php, with the bundled SAPI: `php-cgi` runs it on PHP's engine "
                       "from Debian's php-cgi binary (package php8.2-cgi; the same build as "
                       "php-fpm's), `libphp` on libphp8.2-embed's (3-6% more CPU per "
                       "request: docs/performance.md).", '"libphp"'),
    "pm.mode": ("`pm`", "static, dynamic or ondemand, as PHP-FPM.", '"ondemand"'),
    "pm.max_children": ("`pm.max_children`", "The most workers at once; also the "
                        "tenant's CPU weight.", "8"),
    "pm.start_servers": ("`pm.start_servers`", "dynamic: workers at start; "
                         "min + (max - min) / 2 when unset.", "2"),
    "pm.min_spare_servers": ("`pm.min_spare_servers`", "dynamic: fewest idle workers.",
                             "1"),
    "pm.max_spare_servers": ("`pm.max_spare_servers`", "dynamic: most idle workers.", "3"),
    "pm.max_spawn_rate": ("`pm.max_spawn_rate`", "dynamic: most workers started per "
                          "second.", "32"),
    "pm.process_idle_timeout": ("`pm.process_idle_timeout`", "ondemand: an idle worker "
                                "goes after this.", '"10s"'),
    "pm.zygote_idle_timeout": ("", "ondemand php and python: the zygote goes after this "
                               "with no worker left (0: never); the next request starts "
                               "PHP again.", '"5m"'),
    "pm.max_requests": ("`pm.max_requests`", "A worker is replaced after this many "
                        "requests (0: never).", "1000"),
    "pm.max_requests_jitter": ("", "Up to this many more, at random per worker, so that "
                               "workers do not all recycle at once.", "50"),
    "pm.max_worker_memory": ("", "A worker whose RSS passes this is recycled after its "
                             "request (0: no limit).", '"256M"'),
    "pm.scheduling_policy": ("", "The Linux scheduling policy of the tenant's processes "
                             "(`chrt`, systemd's `CPUSchedulingPolicy=`): under `batch` a "
                             "worker woken by the web server runs at the next scheduling "
                             "point or on an idle CPU instead of preempting it (faster "
                             "under load, docs/performance.md); `other`, the kernel's "
                             "default, may preempt: a faster answer beside another "
                             "tenant's CPU load.", '"other"'),
    "limits.memory": ("(CloudLinux LVE PMEM)", "The tenant's cgroup memory limit, all its "
                      "processes together (0: none).", '"512M"'),
    "limits.cpu": ("(CloudLinux LVE SPEED)", "Cores the tenant may use at most "
                   "(0: no cap).", "1.5"),
    "limits.pids": ("(CloudLinux LVE NPROC)", "Processes and threads at most, the zygote "
                    "included, and its spare worker in ondemand and dynamic pools (0: none).",
                    "64"),
    "limits.open_files": ("`rlimit_files`", "RLIMIT_NOFILE of each worker (0: the "
                          "master's).", "4096"),
    "limits.core_dumps": ("`rlimit_core`", "Whether workers may dump core.", "false"),
    "limits.request_terminate_timeout": ("`request_terminate_timeout`", "A request "
                                         "running longer is killed (0: never).", '"60s"'),
    "limits.request_slowlog_timeout": ("`request_slowlog_timeout`", "A request running "
                                       "longer gets its backtrace in slow.log (0: off).",
                                       '"5s"'),
    "limits.slowlog_trace_depth": ("`request_slowlog_trace_depth`", "Frames per "
                                   "slow.log backtrace.", "20"),
    "isolation.enabled": ("", "The sandbox: namespaces, pivot_root, no capabilities, "
                          "seccomp. Off only for tenants that trust each other.", "true"),
    "isolation.network": ("", "`host` (the host's network), `none` (loopback only) or "
                          "`isolated` (own namespace with a veth).", '"none"'),
    "isolation.hostname": ("", "The sandbox's hostname; the tenant's name when empty.",
                           '"shop"'),
    "isolation.tmp_size": ("", "Size of the tenant's own /tmp (a tmpfs).", '"128M"'),
    "isolation.hide_processes": ("", "A PID namespace of the tenant's own: it sees no "
                                 "other process.", "true"),
    "isolation.binds": ("", "More directories in the sandbox, read-only unless said.",
                        '[{ source = "/usr/share/fonts" }]'),
    "isolation.binds.source": ("", "The host path.", '"/srv/shared/media"'),
    "isolation.binds.target": ("", "Where the tenant sees it; the same path when empty.",
                               '"/media"'),
    "isolation.binds.readonly": ("", "Read-only.", "false"),
    "ini": ("`php_admin_value[...]`, `php_admin_flag[...]`", "php.ini settings, locked: "
            "neither `ini_set()` nor `PHP_VALUE` changes them. python tenants: a few keys "
            "with the same meaning.", '{ memory_limit = "256M", display_errors = false }'),
    "ini_defaults": ("`php_value[...]`, `php_flag[...]`", "php.ini settings a script may "
                     "change (`ini_set()`, the web server's `PHP_VALUE`): defaults, where "
                     "`ini`'s are locked; a key in both is `ini`'s.",
                     '{ upload_max_filesize = "32M", display_errors = false }'),
    "env": ("`env[...]`", "Environment of the workers.", '{ APP_ENV = "production" }'),
    "log.dir": ("", "The tenant's log directory; `<log_dir>/<name>` when empty.",
                '"/var/log/tenantfpm/shop"'),
    "log.access": ("`access.log`", "Write access.log.", "true"),
    "log.access_format": ("`access.format`", "Its format, PHP-FPM's codes.",
                          '"%R - %u %t \\"%m %r\\" %s %{mili}d"'),
    "log.catch_workers_output": ("`catch_workers_output`", "Workers' stdout/stderr into "
                                 "error.log.", "true"),
    "log.rate_limit": ("", "Workers' output read per second; past it the writers wait.",
                       '"1M"'),
    "log.access_rate_limit": ("", "Access lines read per second (workers write them to the "
                              "master, which writes access.log); past it the writers wait.",
                              '"64M"'),
    "log.max_size": ("", "error.log (access.log) size past which workers' output (access "
                     "lines) is dropped (counted) until rotation (0: no cap).", '"1G"'),
    # --- tenantfpm.toml ----------------------------------------------------------------
    "paths.tenants_dir": ("`include=`", "Registered tenants, `<name>.toml` each.",
                          '"/etc/tenantfpm/tenants.d"'),
    "paths.profiles_dir": ("", "The host's own profiles.", '"/etc/tenantfpm/profiles"'),
    "paths.run_dir": ("", "Sockets, pid file, per-tenant generated files.",
                      '"/run/tenantfpm"'),
    "paths.log_dir": ("", "The master's log and `<name>/{error,slow,access}.log`.",
                      '"/var/log/tenantfpm"'),
    "paths.state_dir": ("", "What outlives the master: tenants' PHP sessions.",
                        '"/var/lib/tenantfpm"'),
    "master.control_socket": ("", "The CLI's socket, root's alone (0600).",
                              '"<run_dir>/control.sock"'),
    "master.self_service_socket": ("", "The tenants' users' socket: their own tenant's "
                                   "status, logs and reload (\"\": off).",
                                   '"<run_dir>/self.sock"'),
    "master.pid_file": ("`pid`", "The master's pid file.", '"<run_dir>/tenantfpm.pid"'),
    "master.log_file": ("`error_log`", "The master's log, or `stderr`.",
                        '"<log_dir>/master.log"'),
    "master.log_level": ("`log_level`", "alert, error, warning, notice or debug.",
                         '"notice"'),
    "master.metrics_listen": ("", "HTTP `/metrics` (php-fpm_exporter's names) and "
                              "`/status` (JSON).", '"127.0.0.1:9253"'),
    "master.status_listen": ("`pm.status_path`", "A FastCGI endpoint answering PHP-FPM's "
                             "status page for every tenant.", '"<run_dir>/status.sock"'),
    "master.process_max": ("`process.max`", "All workers of all tenants at most "
                           "(0: no limit).", "200"),
    "master.process_control_timeout": ("`process_control_timeout`", "Grace for busy "
                                       "workers on reload or stop.", '"30s"'),
    "master.emergency_restart_threshold": ("`emergency_restart_threshold`", "Crashes of "
                                           "one tenant's workers that restart it...", "10"),
    "master.emergency_restart_interval": ("`emergency_restart_interval`", "...within "
                                          "this window.", '"1m"'),
    "master.cgroup_parent": ("", "Tenants' cgroups under `<mount>/<cgroup_parent>/`.",
                             '"tenantfpm"'),
    "master.cgroup_delegated": ("", "Under systemd with Delegate=yes, the parent goes "
                                "under the unit's own cgroup (the package sets it).",
                                "true"),
    "master.cgroup_favordynmods": ("", "Remount cgroup2 with favordynmods: faster "
                                   "spawns, a host-wide setting.", "true"),
    "master.isolated_subnet": ("", "`network = \"isolated\"`: one /30 per tenant from "
                               "this range.", '"10.213.0.0/16"'),
    "master.tenant_firewall": ("", "nftables rules keeping tenants' code off every "
                               "tenant's TCP listener and the master's endpoints.",
                               "true"),
    "master.warm_php": ("", "Keep one PHP exec'd ahead (libraries and extensions loaded, "
                        "no tenant yet): the next sandboxed zygote start takes it.",
                        "false"),
    "master.status_listen_group": ("", "Who may read status and metrics besides root: the "
                                   "group of a Unix `status_listen` or `metrics_listen` "
                                   "socket (0660); on TCP, the only group the firewall "
                                   "lets connect.", '"monitoring"'),
}


def _kind(annotation: Any, info: FieldInfo | None = None) -> str:
    """The key's type in words, from the model's annotation and validators."""
    func = _validator(info) if info else None
    if func is parse_duration:
        return "duration"
    if func is parse_size:
        return "size"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _kind(args[0], FieldInfo.from_annotation(annotation))
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (types.UnionType, typing.Union):
        kinds = [_kind(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" (or unset)" if type(None) in args else "")
    if origin is list:
        inner = args[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return "list of tables"
        return f"list of {_kind(inner)}s"
    if origin is dict:
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _validator(info: FieldInfo) -> Any:
    for meta in info.metadata:
        func = getattr(meta, "func", None)
        if func in (parse_duration, parse_size):
            return func
    return None


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default
    if _validator(info) is parse_duration:
        return f"`{value:g}s`"
    if _validator(info) is parse_size:
        return f"`{format_size(value)}`" if value else "`0`"
    if value == [PHP_SAPI_BINARY]:
        return "per `type`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, BaseModel):
        return ""
    return f"`{value!r}`".replace("'", '"')


def _rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    rows = []
    for name, info in model.model_fields.items():
        key = prefix + name
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += _rows(ann, key + ".")
            continue
        rows.append((key, info))
        args = typing.get_args(ann)
        if typing.get_origin(ann) is list and args and isinstance(args[0], type) \
                and issubclass(args[0], BaseModel):
            rows += _rows(args[0], key + ".")
    return rows


def _table(model: type[BaseModel]) -> list[str]:
    out = ["| key | type | default | PHP-FPM | what it does | example |",
           "|---|---|---|---|---|---|"]
    for key, info in _rows(model):
        if key not in DOCS:
            raise KeyError(f"{key}: no entry in config/reference.py DOCS")
        fpm, text, example = DOCS[key]
        kind = _kind(info.annotation, info)
        out.append(f"| `{key}` | {kind} | {_default(info)} | {fpm or '-'} | {text} | "
                   f"`{example}` |".replace("\n", " "))
    return out


def render() -> str:
    keys = {k for k, _ in _rows(Site)} | {k for k, _ in _rows(GlobalConfig)}
    stale = sorted(set(DOCS) - keys)
    if stale:
        raise KeyError(f"DOCS names keys the model does not have: {', '.join(stale)}")
    lines = [
        "# site.toml and tenantfpm.toml: every key",
        "",
        "<!-- generated by `python -m tenantfpm.config.reference` from the config model",
        "     (tenantfpm/config/model.py); tests/test_reference.py fails when it is stale -->",
        "",
        "Durations are seconds or `500ms`, `30s`, `5m`, `1h`; sizes are bytes or `K`, `M`,",
        "`G`. `check` reports a wrong key as `file:line: key: message`, with the closest",
        "valid name.",
        "",
        "## A tenant: `site.toml`",
        "",
        "One file per tenant, registered with `tenantfpm add site.toml` (a copy goes to",
        "`tenants_dir`; `tenantfpm edit NAME` changes it). A minimal one:",
        "",
        "```toml",
        'name    = "shop"',
        'profile = "basic"',
        'user    = "shop"',
        'root    = "/srv/tenants/shop"',
        'domains = ["shop.example"]',
        "```",
        "",
        *_table(Site),
        "",
        "## The host: `tenantfpm.toml`",
        "",
        "`/etc/tenantfpm/tenantfpm.toml`, or `--config FILE` / `TENANTFPM_CONFIG`. Every",
        "key has a default; `<run_dir>` and `<log_dir>` are replaced by those paths.",
        "",
        *_table(GlobalConfig),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
