"""`tenantfpm import`: an operator's php-fpm configuration, as tenants.

php-fpm reads an INI file: a `[global]` section, `include=` globs (Debian's php-fpm.conf
includes `pool.d/*.conf`), and one section per pool, with `$pool` standing for the
pool's name in values. Each pool becomes a site.toml (and the global section the
matching tenantfpm.toml keys); every directive becomes one row of a report: mapped as is,
changed and why, or not carried over and why. Nothing is dropped silently. Pure: reading
files and asking the host about users is the caller's (cli.py), through `read()` and a
`Users` answer.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tenantfpm.config.safety import PRIVILEGED_GROUPS, SYSTEM_USERS

AS_IS, CHANGED, NOT_CARRIED = "as is", "changed", "not carried"
NAME_OK = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
ARRAY = re.compile(r"^(php_value|php_flag|php_admin_value|php_admin_flag|env)\[([^\]]+)\]$")
# what tenantfpm refuses as a tenant's user or group (config/safety.py says why)
SERVICE_USERS = SYSTEM_USERS | {"root"}
# php-fpm's defaults where tenantfpm's differ: written out, so the pool behaves as it did
FPM_DEFAULTS = {
    "pm.max_requests": (0, "php-fpm never recycles by default; tenantfpm's default is 500"),
    "log.catch_workers_output": (False, "php-fpm discards workers' output by default; "
                                        "tenantfpm's default puts it in error.log"),
}


@dataclass(frozen=True)
class Directive:
    file: str
    line: int
    key: str
    value: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Row:
    pool: str  # "" for the global section
    where: str
    directive: str
    value: str
    verdict: str  # AS_IS, CHANGED or NOT_CARRIED
    to: str  # the tenantfpm key it went to, "" when none
    why: str = ""


@dataclass
class Config:
    """What php-fpm would read: the global directives and each pool's, in order."""

    global_: list[Directive] = field(default_factory=list)
    pools: dict[str, list[Directive]] = field(default_factory=dict)


@dataclass
class Imported:
    sites: dict[str, dict] = field(default_factory=dict)  # tenant name -> site.toml data
    master: dict[str, object] = field(default_factory=dict)  # tenantfpm.toml key -> value
    rows: list[Row] = field(default_factory=list)


class FpmConfigError(ValueError):
    """A configuration php-fpm itself would refuse to read."""


def _unquote(v: str) -> str:
    """A value as PHP's INI scanner reads it: quotes off, and in double quotes `\\"` and
    `\\\\` as the characters they escape."""
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1]
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return re.sub(r'\\(["\\])', r"\1", v[1:-1])
    return v


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read(path: str, reader: Callable[[str], str] | None = None) -> Config:
    """php-fpm.conf (with its includes), a pool.d directory, or one pool file."""
    read_text = reader or _read_text
    conf = Config()
    files = (sorted(glob.glob(os.path.join(path, "*.conf"))) if os.path.isdir(path)
             else [path])
    if not files:
        raise FpmConfigError(f"{path}: no *.conf file")
    for f in files:
        _read_file(f, read_text, conf, depth=0)
    return conf


def _read_file(path: str, read_text: Callable[[str], str], conf: Config, depth: int) -> None:
    if depth > 8:
        raise FpmConfigError(f"{path}: includes nested too deep")
    try:
        text = read_text(path)
    except OSError as e:
        raise FpmConfigError(f"{path}: {e.strerror or e}") from e
    section = "global"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            if not section:
                raise FpmConfigError(f"{path}:{n}: an empty section name")
            if section != "global":
                conf.pools.setdefault(section, [])
            continue
        if "=" not in line:
            raise FpmConfigError(f"{path}:{n}: not `directive = value`: {line[:60]!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        value = _unquote(value.split(" ;", 1)[0])
        d = Directive(path, n, key, value)
        if section == "global":
            if key == "include":
                pattern = value if os.path.isabs(value) else os.path.join(
                    os.path.dirname(path), value)
                for inc in sorted(glob.glob(pattern)):
                    _read_file(inc, read_text, conf, depth + 1)
                continue
            conf.global_.append(d)
        else:
            conf.pools[section].append(d)


# --- mapping -------------------------------------------------------------------------

# FPM directive -> (tenantfpm.toml key, how its value goes)
GLOBAL = {
    "log_level": "master.log_level",
    "emergency_restart_threshold": "master.emergency_restart_threshold",
    "emergency_restart_interval": "master.emergency_restart_interval",
    "process_control_timeout": "master.process_control_timeout",
    "process.max": "master.process_max",
}
GLOBAL_OWN = {  # php-fpm's own files: the master keeps its own
    "pid": "the master's pid file is master.pid_file (<run_dir>/tenantfpm.pid); php-fpm's "
           "stays php-fpm's",
    "error_log": "the master logs to master.log_file (<log_dir>/master.log, or stderr "
                 "under systemd); php-fpm's log stays php-fpm's",
}
GLOBAL_DROPPED = {
    "daemonize": "the master runs in the foreground under systemd (Type=notify)",
    "rlimit_files": "set per tenant: limits.open_files",
    "rlimit_core": "set per tenant: limits.core_dumps",
    "events.mechanism": "the master's event loop is asyncio's (epoll)",
    "systemd_interval": "not built yet",
    "log_limit": "not built yet",
    "log_buffering": "not built yet",
    "syslog.facility": "the master logs to a file or stderr (journald under systemd)",
    "syslog.ident": "the master logs to a file or stderr (journald under systemd)",
    "process.priority": "the master runs at the priority systemd gives it",
}
# pool directive -> site key, for values that keep their meaning
POOL = {
    "chdir": "chdir",
    "listen.owner": "listen.owner", "listen.group": "listen.group",
    "listen.allowed_clients": "listen.allowed_clients",
    "pm": "pm.mode", "pm.max_children": "pm.max_children",
    "pm.start_servers": "pm.start_servers", "pm.min_spare_servers": "pm.min_spare_servers",
    "pm.max_spare_servers": "pm.max_spare_servers", "pm.max_spawn_rate": "pm.max_spawn_rate",
    "pm.process_idle_timeout": "pm.process_idle_timeout", "pm.max_requests": "pm.max_requests",
    "request_terminate_timeout": "limits.request_terminate_timeout",
    "request_slowlog_timeout": "limits.request_slowlog_timeout",
    "request_slowlog_trace_depth": "limits.slowlog_trace_depth",
    "rlimit_files": "limits.open_files",
    "access.format": "log.access_format",
}
INTEGER = {"pm.max_children", "pm.start_servers", "pm.min_spare_servers",
           "pm.max_spare_servers", "pm.max_spawn_rate", "pm.max_requests",
           "request_slowlog_trace_depth", "rlimit_files", "listen.backlog",
           "emergency_restart_threshold", "process.max"}
DURATION = {"pm.process_idle_timeout", "request_terminate_timeout",
            "request_slowlog_timeout", "emergency_restart_interval",
            "process_control_timeout"}
POOL_DROPPED = {
    "pm.status_path": "status pages come from the master (master.status_listen, "
                      "master.metrics_listen), not from the pool's socket yet",
    "pm.status_listen": "status pages come from the master (master.status_listen)",
    "ping.path": "not answered on the pool's socket yet",
    "ping.response": "not answered on the pool's socket yet",
    "access.suppress_path": "not built yet",
    "request_terminate_timeout_track_finished": "not built yet",
    "decorate_workers_output": "workers' output goes to error.log decorated, as FPM's "
                               "default (yes) has it",
    "clear_env": "a tenant's workers get only its `env` (and USER, HOME), as clear_env = yes",
    "security.limit_extensions": "the SAPI runs .php and .phar only, as FPM's default",
    "listen.acl_users": "give access with listen.owner and listen.group",
    "listen.acl_groups": "give access with listen.owner and listen.group",
    "process.priority": "the tenant's CPU share is its cgroup's weight (pm.max_children)",
    "process.dumpable": "workers are never dumpable (docs/security.md)",
    "apparmor_hat": "the tenant's sandbox replaces it",
    "listen.setfib": "FreeBSD only",
    "prefix": "paths are absolute in site.toml",
}
_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def _duration(v: str) -> str | None:
    """FPM's `30s`, `5m`, `1h`, `2d` or plain seconds, as tenantfpm writes it."""
    m = _DURATION.match(v.strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2) or "s"
    if unit == "d":
        n, unit = n * 24, "h"
    return f"{n}{unit}"


def _put(site: dict, key: str, value: object) -> None:
    node = site
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _get(site: dict, key: str) -> object:
    node: object = site
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


@dataclass(frozen=True)
class Users:
    """What the host says of users, asked by the importer (the CLI's answer is the
    password database; a test's is a dict)."""

    exists: Callable[[str], bool]
    home: Callable[[str], str | None]


def convert(conf: Config, users: Users, roots: dict[str, str] | None = None) -> Imported:
    out = Imported()
    _global(conf.global_, out)
    roots = roots or {}
    for name, directives in conf.pools.items():
        _pool(name, directives, out, users, roots.get(name) or roots.get(tenant_name(name)))
    return out


def _global(directives: list[Directive], out: Imported) -> None:
    for d in directives:
        if d.key in GLOBAL_OWN:
            out.rows.append(Row("", d.where, d.key, d.value, NOT_CARRIED, "",
                                GLOBAL_OWN[d.key]))
        elif d.key in GLOBAL:
            value: object = d.value
            if d.key in INTEGER and d.value.lstrip("-").isdigit():
                value = int(d.value)
            elif d.key in DURATION:
                value = _duration(d.value) or d.value
            out.master[GLOBAL[d.key]] = value
            out.rows.append(Row("", d.where, d.key, d.value, AS_IS, GLOBAL[d.key]))
        else:
            out.rows.append(Row("", d.where, d.key, d.value, NOT_CARRIED, "",
                                GLOBAL_DROPPED.get(d.key, "no such setting in tenantfpm")))


def tenant_name(pool: str) -> str:
    """A pool's name as a tenant's (`^[a-z0-9][a-z0-9_-]{0,31}$`)."""
    n = re.sub(r"[^a-z0-9_-]+", "-", pool.lower()).strip("-_")[:32]
    return n if NAME_OK.match(n) else f"pool-{n}"[:32].rstrip("-_") or "pool"


def _pool(pool: str, directives: list[Directive], out: Imported, users: Users,
          root: str | None) -> None:
    name = tenant_name(pool)
    site: dict = {"name": name}
    rows = out.rows

    def row(d: Directive, verdict: str, to: str = "", why: str = "") -> None:
        rows.append(Row(name, d.where, d.key, d.value, verdict, to, why))

    if name != pool:
        rows.append(Row(name, "", "[" + pool + "]", pool, CHANGED, "name",
                        "a tenant's name is lowercase letters, digits, - and _"))
    values = {d.key: d for d in directives}
    for d in directives:
        value = d.value.replace("$pool", pool)
        d = Directive(d.file, d.line, d.key, value)
        arr = ARRAY.match(d.key)
        if arr:
            kind, key = arr.groups()
            if kind == "env":
                site.setdefault("env", {})[key] = value
                if "$" in value:
                    row(d, CHANGED, f"env.{key}", "php-fpm expands $VARIABLES from its own "
                                                  "environment; tenantfpm passes the text")
                else:
                    row(d, AS_IS, f"env.{key}")
                continue
            # a flag is php-fpm's boolean: "1" for on/yes/true/1, else "0" (fpm_conf.c)
            ini = value.lower() in ("on", "yes", "true", "1") if kind.endswith("_flag") else value
            table = "ini" if kind.startswith("php_admin") else "ini_defaults"
            site.setdefault(table, {})[key] = ini
            row(d, AS_IS, f"{table}.{key}")
            continue
        if d.key == "user":
            owner = values["listen.owner"].value if "listen.owner" in values else None
            if d.value in SERVICE_USERS or d.value == owner:
                _put(site, "user", name)
                row(d, CHANGED, "user", f"{d.value} is a service account (or the web "
                                        f"server's): the tenant runs as its own user {name!r}"
                                        + ("" if users.exists(name) else
                                           f" (create it: useradd --system --no-create-home "
                                           f"--shell /usr/sbin/nologin {name})"))
            else:
                _put(site, "user", d.value)
                row(d, AS_IS, "user")
            continue
        if d.key == "group":
            socket_group = values["listen.group"].value if "listen.group" in values else ""
            if value in PRIVILEGED_GROUPS or value == socket_group:
                row(d, NOT_CARRIED, "group", f"{value} is a privileged group or the socket's: "
                                             "the tenant runs with its user's own group")
            else:
                _put(site, "group", value)
                row(d, AS_IS, "group")
            continue
        if d.key == "listen":
            _listen(d, site, row)
            continue
        if d.key == "listen.mode":
            try:
                mode = int(value, 8)
            except ValueError:
                row(d, NOT_CARRIED, "", "not an octal mode")
                continue
            if mode & 0o007:
                _put(site, "listen.mode", "0660")
                row(d, CHANGED, "listen.mode", "no tenant's socket is open to every user: "
                                               "0660, for listen.owner and listen.group")
            else:
                _put(site, "listen.mode", f"0{mode:o}")
                row(d, AS_IS, "listen.mode")
            continue
        if d.key == "listen.backlog":
            n = int(value) if value.lstrip("-").isdigit() else -1
            if n <= 0:
                row(d, CHANGED, "listen.backlog", "php-fpm's -1 (the system's most): 511, "
                                                  "nginx's and tenantfpm's default")
                continue
            _put(site, "listen.backlog", n)
            row(d, AS_IS, "listen.backlog")
            continue
        if d.key == "listen.allowed_clients":
            _put(site, "listen.allowed_clients", [a.strip() for a in value.split(",")
                                                  if a.strip()])
            row(d, AS_IS, "listen.allowed_clients")
            continue
        if d.key == "access.log":
            _put(site, "log.access", True)
            row(d, CHANGED, "log.access", "access.log is written in the tenant's log "
                                          "directory (<log_dir>/<name>/access.log)")
            continue
        if d.key == "slowlog":
            row(d, CHANGED, "", "slow.log is written in the tenant's log directory "
                                "(<log_dir>/<name>/slow.log)")
            continue
        if d.key == "chroot":
            row(d, CHANGED, "root", "the sandbox shows the tenant its root at its own path, "
                                    "no chroot needed")
            continue
        if d.key == "rlimit_core":
            dumps = value not in ("0", "")
            _put(site, "limits.core_dumps", dumps)
            row(d, AS_IS if value in ("0", "unlimited") else CHANGED, "limits.core_dumps",
                "" if value in ("0", "unlimited") else "on or off: no size limit")
            continue
        if d.key == "catch_workers_output":
            _put(site, "log.catch_workers_output", value.lower() in ("yes", "on", "true", "1"))
            row(d, AS_IS, "log.catch_workers_output")
            continue
        if d.key in POOL:
            v: object = value
            if d.key in INTEGER:
                if not value.isdigit():
                    row(d, NOT_CARRIED, "", "not a number")
                    continue
                v = int(value)
            elif d.key in DURATION:
                dur = _duration(value)
                if dur is None:
                    row(d, NOT_CARRIED, "", "not a duration")
                    continue
                v = dur
            if d.key == "chdir" and value == "/":
                row(d, NOT_CARRIED, "", "/ is the default working directory of php-fpm only: "
                                        "the tenant's is its root")
                continue
            _put(site, POOL[d.key], v)
            row(d, AS_IS, POOL[d.key])
            continue
        row(d, NOT_CARRIED, "", POOL_DROPPED.get(d.key, "no such setting in tenantfpm"))
    site.setdefault("user", name)
    for key, (default, why) in FPM_DEFAULTS.items():
        if _get(site, key) is None:
            _put(site, key, default)
            rows.append(Row(name, "", f"(default) {key}", _toml_value(default), CHANGED, key,
                            why))
    if "user" not in values:
        rows.append(Row(name, "", "user", "", CHANGED, "user",
                        f"php-fpm needs one: the tenant runs as {name!r}"))
    _root(name, site, values, users, root, rows)
    out.sites[name] = site


def _listen(d: Directive, site: dict, row: Callable[..., None]) -> None:
    v = d.value
    if v.isdigit():  # FPM: every address, that port
        _put(site, "listen.address", f"0.0.0.0:{v}")
        row(d, CHANGED, "listen.address", "a bare port listens on every IPv4 address; say "
                                          "so, or 127.0.0.1:PORT for the web server alone")
    elif v.startswith("/") or ":" in v:
        _put(site, "listen.address", v)
        row(d, AS_IS, "listen.address")
    else:
        row(d, NOT_CARRIED, "", "not a path, PORT or ADDRESS:PORT")


def _root(name: str, site: dict, values: dict[str, Directive], users: Users,
          given: str | None, rows: list[Row]) -> None:
    """The tenant's root: what the operator named, php-fpm's chroot, its chdir, or the
    user's home, in that order; the report says which."""
    chroot = values.get("chroot")
    chdir = site.get("chdir")
    home = users.home(site["user"])
    for value, why in ((given, "given with --root"),
                       (chroot.value if chroot else None, "php-fpm's chroot"),
                       (chdir, "php-fpm's chdir"),
                       (home if home and home not in ("/", "/nonexistent") else None,
                        f"the home of user {site['user']!r}"),
                       ("/var/www" if os.path.isdir("/var/www") else None,
                        "Debian's web root, php-fpm's commented chdir")):
        if value:
            site["root"] = value
            rows.append(Row(name, "", "(root)", value, CHANGED, "root",
                            f"a tenant's files: {why}; --root {name}=PATH to choose"))
            return
    rows.append(Row(name, "", "(root)", "", NOT_CARRIED, "root",
                    f"php-fpm has none: name the tenant's files with --root {name}=PATH"))


# --- writing ------------------------------------------------------------------------


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a TOML basic string


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def toml(data: dict, header: str = "") -> str:
    """A site.toml (or tenantfpm.toml fragment): top-level keys, then one table each."""
    lines = [f"# {line}" for line in header.splitlines()]
    flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in flat.items()]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{_toml_key(k)}]"]
            lines += [f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def master_toml(master: dict[str, object]) -> str:
    tables: dict[str, dict] = {}
    for key, value in master.items():
        table, k = key.split(".", 1)
        tables.setdefault(table, {})[k] = value
    return toml(tables, "settings from php-fpm's [global] section: merge into tenantfpm.toml")
