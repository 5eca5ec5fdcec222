"""The `tenantfpm` command (SPEC 3). Exit codes: 0 ok, 1 failure, 2 usage, 3 master not running."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import click

from tenantfpm import nginx
from tenantfpm.client import Client, NotFoundError
from tenantfpm.config.loader import HostSystem, load_global, load_site
from tenantfpm.config.model import GlobalConfig
from tenantfpm.config.tenant import Tenant, resolve
from tenantfpm.errors import ConfigError, MasterNotRunning, TenantFPMError
from tenantfpm.logs import LINE, escape, not_kept, parse_timestamp
from tenantfpm.logview import FileLog, RemoteLog
from tenantfpm.registry import Registry, validate_for_add
from tenantfpm.status_fields import TOP
from tenantfpm.units import format_size, parse_duration
from tenantfpm.wire import fastcgi

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class _Console:
    """rich's Console, imported at the first line printed: `tenantfpm run` (the master)
    prints none, and rich would add 5 MB to it."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def _real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)


# into a pipe or a file (grep, scripts, a cron mail) tables must not be cut at 80 columns;
# no rich markup anywhere: what is printed holds tenants' text
out = _Console(highlight=False, markup=False, soft_wrap=True,
               width=None if sys.stdout.isatty() else 250)
err = _Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


class Ctx:
    def __init__(self, config: str | None) -> None:
        self.config_path = config
        self._conf: GlobalConfig | None = None

    @property
    def conf(self) -> GlobalConfig:
        if self._conf is None:
            self._conf = load_global(self.config_path)
        return self._conf

    @property
    def client(self) -> Client:
        return Client(self.conf.master.control_socket, printable=True)

    @property
    def self_service(self) -> bool:
        """Not root: a tenant's own user, served by the self-service socket (its tenant's
        status, logs and reload, nothing else)."""
        return os.geteuid() != 0

    @property
    def self_client(self) -> Client:
        path = self.conf.master.self_service_socket
        if not path:
            raise TenantFPMError("this host has no self-service socket "
                                 "([master] self_service_socket is off): ask its admin")
        return Client(path, printable=True)

    def tenant(self, name: str) -> Tenant:
        reg = Registry(self.conf)
        if not reg.path(name).exists():
            raise NotFoundError(f"no tenant named {name!r} (not in {reg.dir})")
        return reg.load(name)


pass_ctx = click.make_pass_decorator(Ctx)


def config_option(f: Any) -> Any:
    return click.option("--config", "config", metavar="FILE", envvar="TENANTFPM_CONFIG",
                        help="global config file (default /etc/tenantfpm/tenantfpm.toml)")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """tenantfpm: PHP-FPM's process management, every pool an isolated tenant."""
    ctx.obj = Ctx(config)


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def nginx_snippet(tenant: Tenant) -> str:
    return nginx.server_block(tenant)


@cli.command()
@pass_ctx
def run(ctx: Ctx) -> None:
    """Run the master in the foreground (systemd Type=notify friendly)."""
    from tenantfpm.master.arbiter import Master

    conf = ctx.conf
    if os.geteuid() != 0:
        raise TenantFPMError("the master must run as root: it switches workers to the "
                             "tenants' users, builds their namespaces and cgroups")
    for d in (conf.paths.run_dir, conf.paths.log_dir, conf.paths.state_dir,
              conf.paths.tenants_dir):
        os.makedirs(d, mode=0o755, exist_ok=True)
    if Client(conf.master.control_socket).running():
        raise TenantFPMError("another master is running (its control socket answers: "
                             f"{conf.master.control_socket})")
    asyncio.run(Master(conf).run())


@cli.command()
@click.argument("site", type=click.Path(dir_okay=False))
@click.option("--replace", is_flag=True, help="update a registered tenant of the same name")
@pass_ctx
def add(ctx: Ctx, site: str, replace: bool) -> None:
    """Validate, register and start a tenant; on failure nothing stays registered."""
    path = os.path.abspath(site)
    conf = ctx.conf
    reg = Registry(conf)
    system = HostSystem().preload()  # the registry's users and the new one, read once
    registered, _ = reg.load_all(system=system)
    _, tenant, text = validate_for_add(conf, path, list(registered.values()), replace, system)
    client = ctx.client
    if client.running():
        with err.status(f"waiting for tenant {tenant.name} to start serving "
                        f"(its workers starting, up to 30s)..."):
            result = client.call("POST", "/v1/tenants", {"path": path, "replace": replace})
        verb = "replaced" if result.get("replaced") else "added"
        out.print(f"tenant {tenant.name} {verb}: serving on {result['listen']}")
    else:
        reg.write(tenant.name, text)
        out.print(f"tenant {tenant.name} registered in {reg.dir}; the master is not running, "
                  "it will start the tenant when it starts")
    out.print(f"\ntry it:  tenantfpm request {tenant.name} /\n\n"
              f"nginx (/etc/nginx/sites-available/{tenant.name}; `tenantfpm nginx "
              f"{tenant.name}` prints it again):\n{nginx_snippet(tenant)}", markup=False)


@cli.command(name="nginx")
@click.argument("name")
@click.option("--listen", default="80", show_default=True, help="the server's listen")
@pass_ctx
def nginx_(ctx: Ctx, name: str, listen: str) -> None:
    """Print the tenant's nginx server block, for sites-available/NAME as it is."""
    click.echo(nginx.server_block(ctx.tenant(name), listen), nl=False)


@cli.command()
@click.argument("sites", nargs=-1, type=click.Path(dir_okay=False))
@pass_ctx
def check(ctx: Ctx, sites: tuple[str, ...]) -> None:
    """Validate site files (like php-fpm -t): each on its own, then against each other and
    the registered tenants. Without SITES: every file in tenants_dir."""
    conf = ctx.conf
    reg = Registry(conf)
    files = list(sites) or [str(reg.dir / f"{n}.toml") for n in reg.names()]
    if not files:
        out.print(f"no site files given and none registered in {reg.dir}")
        return
    failed = False
    checked: list[tuple[str, Tenant]] = []
    system = HostSystem().preload()  # every user read once, however many files
    for site in files:
        try:
            s = load_site(site, conf.paths.profiles_dir, system=system, conf=conf)
            checked.append((site, resolve(s, conf, system)))
        except ConfigError as e:
            err.print(str(e), markup=False)
            failed = True
    registered, _ = reg.load_all(system=system)
    names = {t.name for _, t in checked}
    for i, (site, tenant) in enumerate(checked):
        others = [t for _, t in checked[:i]] + [t for n, t in registered.items()
                                               if n not in names]
        try:
            reg.conflicts(tenant, others, site)
        except ConfigError as e:
            err.print(str(e), markup=False)
            failed = True
            continue
        s = tenant.site
        out.print(f"{site}: ok (tenant {s.name}, pm {s.pm.mode}, "
                  f"max_children {s.pm.max_children})")
    if failed:
        sys.exit(1)


@cli.command(name="import")
@click.argument("path", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="where the site files go (default: ./imported)")
@click.option("--check", "check_only", is_flag=True, help="report only; write nothing")
@click.option("--root", "roots", multiple=True, metavar="POOL=PATH",
              help="a pool's tenant root (its files), where php-fpm's config names none")
@click.option("--create-users", is_flag=True,
              help="make the tenant users the report asks for (useradd --system)")
@pass_ctx
def import_(ctx: Ctx, path: str, out_dir: str | None, check_only: bool,
            roots: tuple[str, ...], create_users: bool) -> None:
    """php-fpm's configuration (php-fpm.conf with its includes, a pool.d directory or one
    pool file) as one site.toml per pool, with every directive's fate: mapped as is,
    changed and why, not carried over and why. Registers nothing: review the files, stop
    php-fpm (the tenants take over its socket paths), then `tenantfpm add` each."""
    from tenantfpm import fpm_importer
    from tenantfpm.config.fpm_import import FpmConfigError

    given: dict[str, str] = {}
    for r in roots:
        pool, sep, where = r.partition("=")
        if not sep or not where.startswith("/"):
            raise click.UsageError(f"--root {r}: POOL=/absolute/path")
        given[pool] = where
    try:
        outcome = fpm_importer.run(ctx.conf, path, None if check_only else
                                   (out_dir or "imported"), given, create_users)
    except FpmConfigError as e:
        err.print(f"import: {e}", markup=False)
        sys.exit(1)
    t = _table("POOL", "WHERE", "DIRECTIVE", "VALUE", "FATE", "TENANTFPM", "WHY", folds="WHY")
    for row in outcome.imported.rows:
        t.add_row(row.pool or "(global)", os.path.basename(row.where), row.directive,
                  row.value, row.verdict, row.to, row.why)
    out.print(t)
    for user in outcome.created:
        out.print(f"created user {user}")
    for file in outcome.written:
        out.print(f"wrote {file}")
    for name, problem in outcome.problems.items():
        err.print(f"tenant {name} does not pass `tenantfpm check` yet:\n{problem}", markup=False)
    if outcome.problems:
        sys.exit(1)


@cli.command()
@click.argument("name")
@pass_ctx
def remove(ctx: Ctx, name: str) -> None:
    """Stop a tenant gracefully and unregister it; its logs are kept."""
    client = ctx.client
    if client.running():
        with err.status(f"waiting for tenant {name}'s workers to finish their requests..."):
            client.call("DELETE", f"/v1/tenants/{name}")
    else:
        reg = Registry(ctx.conf)
        if not reg.path(name).exists():
            raise NotFoundError(f"no tenant named {name!r}")
        reg.remove(name)
    out.print(f"tenant {name} removed (logs kept)")


def _mem(n: Any) -> str:
    return format_size(n) if isinstance(n, int) and n else "-"


def _text(v: Any) -> str:
    return "null" if v is None else str(v)


def _memory(d: dict[str, Any]) -> str:
    """The cgroup's figure (and its limit) where there is one, else the workers' RSS."""
    cur = d.get("memory_current")
    if cur is None:
        return _mem(d.get("workers_rss")) + " rss" if d.get("workers_rss") else "-"
    limit = d.get("memory_limit")
    return _mem(cur) + (f"/{_mem(limit)}" if limit else "")


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--wide", is_flag=True, help="with each tenant's listen address")
@pass_ctx
def list_(ctx: Ctx, as_json: bool, wide: bool) -> None:
    """Tenants with state, pm, workers and memory (fits 80 columns; --wide adds LISTEN)."""
    data = ctx.client.call("GET", "/v1/tenants")
    if as_json:
        _dump(data)
        return
    t = _table("NAME", "STATE", "PM", "ACTIVE", "IDLE", "PROCS", "MEMORY",
               *(["LISTEN"] if wide else []), folds="LISTEN")
    for d in data:
        t.add_row(d["name"], d["state"], d.get("pm", "-"), str(d.get("active_processes", "-")),
                  str(d.get("idle_processes", "-")),
                  f"{d.get('total_processes', '-')}/{d.get('max_children', '-')}", _memory(d),
                  *([d.get("listen", d.get("error", ""))] if wide else []))
    out.print(t)
    errors = [d for d in data if d.get("error") and not wide]
    for d in errors:
        err.print(f"tenant {d['name']}: {d['error']}", markup=False)


def _table(*columns: str, title: str | None = None, folds: str = "") -> Table:
    """Columns one space apart and no frame, so that a row of the usual tenant fits 80
    columns; nothing is cut with an ellipsis: the `folds` column (a path) wraps. String
    cells are text, never rich markup: a tenant's "[link=...]" stays those characters."""
    from rich.table import Table
    from rich.text import Text

    class PlainTable(Table):
        def add_row(self, *cells: Any, **kw: Any) -> None:
            super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kw)

    t = PlainTable(box=None, padding=(0, 1, 0, 0), title=title, title_justify="left")
    for col in columns:
        t.add_column(col, no_wrap=col != folds, overflow="fold")
    return t


def _fpm_time(epoch: Any) -> str:
    """start_time as PHP-FPM's status page prints it: 01/Dec/2026:21:46:03 +0000."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return _text(epoch)
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(epoch))


@cli.command()
@click.argument("name", required=False)
@click.option("--full", is_flag=True, help="include every process")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(ctx: Ctx, name: str | None, full: bool, as_json: bool) -> None:
    """Pool status, PHP-FPM style."""
    q = "?full=1" if full else ""
    if ctx.self_service:
        ask = urlencode({**({"full": 1} if full else {}), **({"name": name} if name else {})})
        data = ctx.self_client.call("GET", "/v1/self/status" + (f"?{ask}" if ask else ""))
    else:
        data = ctx.client.call("GET", f"/v1/tenants/{name}/status{q}" if name
                               else f"/v1/status{q}")
    if as_json:
        _dump(data)
        return
    for d in data if isinstance(data, list) else [data]:
        for k, v in d.items():
            if k == "processes":
                continue
            if k == "start_time":
                v = _fpm_time(v)
            if isinstance(v, dict):
                v = ", ".join(f"{a}={'+'.join(map(str, b)) if isinstance(b, list) else _text(b)}"
                              for a, b in v.items())
            out.print(f"{k + ':':<24}{_text(v)}", markup=False)
        if d.get("processes"):
            t = _table("PID", "STATE", "START", "DURATION", "RSS", "CPU")
            for p in d["processes"]:
                dur = p["request_duration_ms"]
                t.add_row(str(p["pid"]), p["state"], f"{p['start_since']}s ago",
                          f"{dur}ms" if dur is not None else "-", _mem(p["rss"]),
                          f"{p['cpu_seconds']:.2f}s" if p["cpu_seconds"] is not None else "-")
            out.print(t)
        out.print()


def _action(ctx: Ctx, name: str, action: str, waiting: str) -> None:
    with err.status(waiting):
        result = ctx.client.call("POST", f"/v1/tenants/{name}/{action}")
    state = result.get("state")
    out.print(f"tenant {name}: {state}" + (f" ({result['error']})" if result.get("error") else ""))
    if action != "stop" and state != "running":
        sys.exit(1)


@cli.command()
@click.argument("name", required=False)
@pass_ctx
def reload(ctx: Ctx, name: str | None) -> None:
    """Re-read the tenant's file(s) and replace workers gracefully (all tenants without NAME;
    a tenant's own user: its own tenant)."""
    if ctx.self_service:
        with err.status("reloading: the new workers starting..."):
            result = ctx.self_client.call("POST", "/v1/self/reload"
                                          + (f"?{urlencode({'name': name})}" if name else ""))
        out.print(f"tenant {result.get('name', name)}: {result.get('state')}")
        if result.get("state") != "running":
            sys.exit(1)
        return
    if name is None:
        with err.status("reloading every tenant..."):
            result = ctx.client.call("POST", "/v1/reload")
        outcome = result.get("tenants", {})
        failed = {n: r for n, r in outcome.items() if r.startswith("not reloaded")}
        out.print(f"reloaded: {', '.join(result['reloaded']) or 'no tenants'}")
        for n, r in sorted(failed.items()):
            err.print(f"tenant {n}: {r}", markup=False)
        if failed:
            sys.exit(1)
        return
    path = Registry(ctx.conf).path(name)
    err.print(f"re-reading {path} (the registered copy: a changed site file needs "
              f"`tenantfpm add --replace FILE`; or `tenantfpm edit {name}`)", markup=False)
    _action(ctx, name, "reload", f"waiting for tenant {name}'s new workers to serve...")


@cli.command()
@click.argument("name")
@pass_ctx
def edit(ctx: Ctx, name: str) -> None:
    """Edit a registered tenant in $VISUAL/$EDITOR, like crontab -e or visudo: the result is
    checked, then applied with a graceful reload; one that does not pass changes nothing."""
    conf = ctx.conf
    reg = Registry(conf)
    path = reg.path(name)
    if not path.exists():
        raise NotFoundError(f"no tenant named {name!r} (not in {reg.dir})")
    original = path.read_text()
    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR")
                         or ("sensible-editor" if shutil.which("sensible-editor") else "vi"))
    with tempfile.TemporaryDirectory(prefix="tenantfpm-edit-") as d:
        draft = os.path.join(d, f"{name}.toml")
        with open(draft, "w") as f:
            f.write(original)
        while True:
            rc = subprocess.call([*editor, draft])
            if rc != 0:
                raise TenantFPMError(f"{editor[0]} exited with code {rc}: nothing changed")
            with open(draft) as f:
                text = f.read()
            if text == original:
                out.print(f"tenant {name}: no changes")
                return
            problem = _edit_problem(conf, reg, name, draft)
            if problem is None:
                break
            err.print(problem, markup=False)
            if not sys.stdin.isatty() or not click.confirm("edit again?", default=True,
                                                           err=True):
                err.print(f"nothing changed: {path} is as it was", markup=False)
                sys.exit(1)
        client = ctx.client
        if client.running():
            with err.status(f"applying: tenant {name}'s new workers starting..."):
                client.call("POST", "/v1/tenants", {"path": draft, "replace": True})
            out.print(f"tenant {name}: {path} updated, the tenant reloaded", markup=False)
        else:
            reg.write(name, text)
            out.print(f"tenant {name}: {path} updated; the master is not running, it will "
                      "use it when it starts", markup=False)


def _edit_problem(conf: GlobalConfig, reg: Registry, name: str, draft: str) -> str | None:
    """Why an edited file cannot replace tenant `name`'s (None: it can)."""
    system = HostSystem().preload()
    registered, _ = reg.load_all(system=system)
    others = [t for n, t in registered.items() if n != name]
    try:
        site, _, _ = validate_for_add(conf, draft, others, replace=True, system=system)
    except ConfigError as e:
        return str(e)
    if site.name != name:
        return (f"name = {site.name!r}: an edit cannot rename tenant {name!r} (add the new "
                "name, then remove the old one)")
    return None


@cli.command()
@click.argument("name")
@pass_ctx
def start(ctx: Ctx, name: str) -> None:
    """Start a stopped tenant."""
    _action(ctx, name, "start", f"waiting for tenant {name} to serve...")


@cli.command()
@click.argument("name")
@pass_ctx
def stop(ctx: Ctx, name: str) -> None:
    """Stop a tenant gracefully (it stays registered)."""
    _action(ctx, name, "stop", f"waiting for tenant {name}'s workers to finish...")


@cli.command()
@click.argument("name")
@pass_ctx
def restart(ctx: Ctx, name: str) -> None:
    """Stop then start a tenant."""
    _action(ctx, name, "restart", f"restarting tenant {name}...")


def _selected(lines: Iterator[str], since: float | None,
              grep: re.Pattern[str] | None) -> Iterator[str]:
    for line in lines:
        # lines a worker wrote itself (access.log) may hold terminal escapes
        line = escape(line)
        if since is not None:
            m = LINE.match(line)
            if not m or parse_timestamp(m.group(1)) < since:
                continue
        if grep is not None and not grep.search(line):
            continue
        yield line


def _as_json(line: str) -> dict[str, Any]:
    m = LINE.match(line)
    if not m:
        return {"time": None, "level": None, "message": line}
    return {"time": m.group(1), "level": m.group(2).lower(), "message": m.group(3)}


@cli.command()
@click.argument("name", required=False)
@click.option("--error", "kind", flag_value="error", default=True, help="error.log (default)")
@click.option("--slow", "kind", flag_value="slow", help="slow.log")
@click.option("--access", "kind", flag_value="access", help="access.log")
@click.option("-f", "--follow", is_flag=True)
@click.option("--since", metavar="DURATION", help="only lines newer than this, e.g. 10m")
@click.option("-n", "lines", type=int, metavar="N", help="last N lines")
@click.option("--grep", metavar="RE", help="only lines matching this regular expression")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def logs(ctx: Ctx, name: str | None, kind: str, follow: bool, since: str | None,
         lines: int | None, grep: str | None, as_json: bool) -> None:
    """Review a tenant's logs (a tenant's own user: its own tenant's, NAME optional)."""
    try:
        since_ts = time.time() - parse_duration(since) if since else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as e:
        raise click.BadParameter(f"invalid regular expression: {e}", param_hint="--grep") from None
    source: FileLog | RemoteLog
    if ctx.self_service:
        source = RemoteLog(ctx.self_client, name, kind)
        if source.missing:
            err.print(source.not_kept or f"no {kind}.log yet: nothing was logged there",
                      markup=False)
    else:
        if name is None:
            raise click.UsageError("name the tenant (tenantfpm logs NAME)")
        source = _root_log(ctx, name, kind)
    selected = list(_selected(source.lines(), since_ts, pattern))
    if lines is not None:
        selected = selected[-lines:] if lines > 0 else []
    if as_json and not follow:
        _dump([_as_json(x) for x in selected])
        return
    for line in selected:
        click.echo(json.dumps(_as_json(line)) if as_json else line)
    if not follow:
        return
    for line in _selected(source.follow(), None, pattern):
        click.echo(json.dumps(_as_json(line)) if as_json else line)


def _root_log(ctx: Ctx, name: str, kind: str) -> FileLog:
    reg = Registry(ctx.conf)
    reg.path(name)  # a tenant's name, never a path
    tenant: Tenant | None
    try:
        tenant = reg.load(name)
        log_dir = tenant.log_dir
    except (ConfigError, TenantFPMError):
        tenant, log_dir = None, os.path.join(ctx.conf.paths.log_dir, name)
    if not os.path.isdir(log_dir):
        raise NotFoundError(f"no logs for tenant {name!r} (no directory {log_dir})")
    source = FileLog(os.path.join(log_dir, f"{kind}.log"))
    if source.missing and tenant is not None:
        err.print(not_kept(tenant.site, kind)
                  or f"{source.path} does not exist yet: nothing was logged there", markup=False)
    return source


@cli.command()
@click.option("--interval", default=1.0, show_default=True, help="seconds between refreshes")
@click.option("--once", is_flag=True, help="print the table once and exit (scripts, logs)")
@pass_ctx
def top(ctx: Ctx, interval: float, once: bool) -> None:
    """Live view of every tenant."""
    from rich.live import Live

    client = ctx.client

    def table() -> Table:
        columns = [f.column or f.key for f in TOP]
        t = _table("TENANT", "STATE", *columns[:2], "PROCS", *columns[2:], "MEMORY",
                   title=f"tenantfpm {time.strftime('%H:%M:%S')}  (MAXED: max_children "
                         "reached, KILL: terminated)")
        for d in client.call("GET", "/v1/status"):
            values = ["-" if d.get(f.key) is None else str(d[f.key]) for f in TOP]
            t.add_row(d["name"], d["state"], *values[:2],
                      f"{d.get('total_processes', '-')}/{d.get('max_children', '-')}",
                      *values[2:], _memory(d))
        return t

    if once:
        out.print(table())
        return
    with Live(table(), console=out._real(), refresh_per_second=4) as live:
        while True:
            time.sleep(interval)
            live.update(table())


@cli.command()
@click.argument("name")
@click.argument("uri")
@click.option("-X", "method", default="GET", show_default=True)
@click.option("-d", "data", help="request body")
@click.option("-H", "headers", multiple=True, metavar="'K: V'", help="request header")
@click.option("-p", "params", multiple=True, metavar="KEY=VALUE", help="FastCGI param")
@click.option("--docroot", help="document root (default: the tenant's root)")
@click.option("--timeout", default=30.0, show_default=True)
@pass_ctx
def request(ctx: Ctx, name: str, uri: str, method: str, data: str | None,
            headers: tuple[str, ...], params: tuple[str, ...], docroot: str | None,
            timeout: float) -> None:
    """Send one FastCGI request to the tenant's socket and print the response."""
    tenant = ctx.tenant(name)
    body = (data or "").encode()
    hdrs = []
    for h in headers:
        k, sep, v = h.partition(":")
        if not sep:
            raise click.BadParameter(f"expected 'Key: value', got {h!r}", param_hint="-H")
        hdrs.append((k, v))
    p = fastcgi.cgi_params(docroot or tenant.site.root, uri, method.upper(), body, hdrs)
    for kv in params:
        k, sep, v = kv.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {kv!r}", param_hint="-p")
        p[k] = v
    try:
        resp = fastcgi.request(str(tenant.listen), p, body, timeout=timeout)
    except OSError as e:
        raise TenantFPMError(f"cannot reach tenant {name} at {tenant.listen}: "
                             f"{e.strerror or e}") from None
    for k, v in resp.headers:
        click.echo(f"{k}: {v}")
    if resp.headers:
        click.echo()
    sys.stdout.flush()
    sys.stdout.buffer.write(resp.body)
    sys.stdout.flush()
    if resp.stderr:
        err.print(resp.stderr.decode(errors="replace").rstrip(), markup=False)
    if not resp.complete:
        err.print("error: the connection closed without FCGI_END_REQUEST")
        sys.exit(1)
    if resp.status >= 500:
        sys.exit(1)


@cli.command(name="reopen-logs")
@pass_ctx
def reopen_logs(ctx: Ctx) -> None:
    """Reopen every log file (after logrotate)."""
    ctx.client.call("POST", "/v1/reopen-logs")
    out.print("log files reopened")


@cli.command()
@click.option("--now", is_flag=True, help="immediate stop (SIGTERM semantics)")
@pass_ctx
def shutdown(ctx: Ctx, now: bool) -> None:
    """Stop the master: gracefully, or at once with --now."""
    client = ctx.client
    client.call("POST", "/v1/shutdown", {"now": now})
    with err.status("waiting for the master to stop..."):
        deadline = time.time() + ctx.conf.master.process_control_timeout + 10
        while time.time() < deadline and client.running():
            time.sleep(0.1)
    out.print("master stopped")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except MasterNotRunning as e:
        err.print(f"tenantfpm: {e}", markup=False)
        sys.exit(3)
    except ConfigError as e:
        err.print(str(e), markup=False)
        sys.exit(1)
    except TenantFPMError as e:
        err.print(f"tenantfpm: {e}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as e:  # a file, socket, mount or cgroup the system refused: say which
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        err.print(f"tenantfpm: {e.strerror or e}{where}", markup=False)
        sys.exit(1)


