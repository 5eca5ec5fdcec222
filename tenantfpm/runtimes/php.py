"""PHP on the project's own SAPI (sapi/): one zygote per tenant, workers forked from it.

The zygote starts PHP once inside the tenant's sandbox; the master orders workers
from it (master/zygote.py). It runs on one of two builds of PHP's engine
(`runtime.engine`): Debian's php-cgi8.2 binary, exec'd with the SAPI
(`tenantfpm-php.so`) preloaded, which takes over its start (the default:
sapi/engine.c says why), or Debian's libphp8.2-embed, which the SAPI's own program
(`tenantfpm-php`) is linked against. Its SAPI name is "fpm-fcgi", so opcache
turns itself on as under PHP-FPM and applications that test PHP_SAPI behave as
they do there. The tenant's workers share one opcache segment, made by their
zygote; no two tenants share one.

php.ini: the distribution's FPM php.ini (else the CGI one) and the same SAPI's
conf.d, then the tenant's [ini], every key of which is locked against ini_set()
and the web server's PHP_VALUE / PHP_ADMIN_VALUE (SPEC 2: the admin's values).
"""

from __future__ import annotations

import os

from tenantfpm import inspect, pm
from tenantfpm.config.model import PHP_ENGINE_BINARY, PHP_SAPI_BINARY, PHP_VERSION
from tenantfpm.config.tenant import Tenant
from tenantfpm.runtimes.base import Channels, Runtime, worker_env
from tenantfpm.runtimes.php_cgi import (
    ini_path,
    session_binds,
    session_dir,
    system_ini,
    write_ini,
)
from tenantfpm.sandbox.rootfs import INI_TARGET
from tenantfpm.sandbox.spawn import WarmStart
from tenantfpm.wire.fds import LIB_DIR
from tenantfpm.wire.scoreboard import Board

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../tenantfpm
SAPI_INSIDE = os.path.join(LIB_DIR, "tenantfpm", "libexec", "tenantfpm-php")
INI_SAPIS = ("fpm", "cgi", "cli", "embed")  # whose php.ini and conf.d a tenant starts from
HEAD_TIMEOUT_MS = 30000  # a connection must send its request's head within this


def base_ini() -> str | None:
    return system_ini(f"php{PHP_VERSION}", INI_SAPIS)


def scan_dir() -> str | None:
    base = base_ini()
    if base is None:
        return None
    d = os.path.join(os.path.dirname(base), "conf.d")
    return d if os.path.isdir(d) else None


def bundled(tenant: Tenant) -> bool:
    return tenant.site.runtime.bundled_sapi


def zygote_command(tenant: Tenant) -> tuple[list[str], dict[str, str]]:
    site = tenant.site
    isolated = site.isolation.enabled
    preload = None
    if not bundled(tenant):
        binary = os.path.realpath(site.runtime.command[0])
    else:
        binary = SAPI_INSIDE if isolated else os.path.realpath(PHP_SAPI_BINARY)
        if site.runtime.engine == "php-cgi":  # /usr is in every tenant's view
            binary, preload = os.path.realpath(PHP_ENGINE_BINARY), binary + ".so"
    argv = [binary, "-c", INI_TARGET if isolated else ini_path(tenant),
            "-t", str(HEAD_TIMEOUT_MS)]
    for key in site.ini:
        argv += ["-a", key]
    spare = pm.spare_delay_ms(site.pm)
    if spare is not None:
        argv += ["-s", str(spare)]
    if site.log.access:  # each worker writes its lines (fd from channels())
        argv += ["-l", site.log.access_format, "-n", tenant.name, "-m", str(os.getpid())]
    argv += site.runtime.command[1:]
    env = worker_env(tenant)
    if preload:
        env["LD_PRELOAD"] = preload  # the zygote takes it out of its environment at once
    conf_d = scan_dir()
    if conf_d:
        env["PHP_INI_SCAN_DIR"] = conf_d
    return argv, env


class Php(Runtime):
    """The zygote: PHP started once per tenant, workers that publish a scoreboard."""

    type = "php"
    zygote = True
    reports_requests = True

    def prepare(self, tenant: Tenant) -> None:
        write_ini(tenant, base_ini(), session_dir(tenant) if tenant.state_dir else None)

    def zygote_command(self, tenant: Tenant) -> tuple[list[str], dict[str, str]]:
        return zygote_command(tenant)

    def warm_start(self, tenant: Tenant) -> WarmStart | None:
        """Sandboxed zygotes of the SAPI (either engine), each PHP namespace its own, can be
        started ahead (sapi/warm.c): the same program, by its host paths."""
        iso = tenant.site.isolation
        if not bundled(tenant) or not iso.enabled or not iso.hide_processes:
            return None
        if tenant.site.runtime.engine == "php-cgi":
            return WarmStart(os.path.realpath(PHP_ENGINE_BINARY),
                             preload=os.path.realpath(PHP_SAPI_BINARY) + ".so",
                             scan_dir=scan_dir())
        return WarmStart(os.path.realpath(PHP_SAPI_BINARY), scan_dir=scan_dir())

    def ini_source(self, tenant: Tenant) -> str | None:
        return ini_path(tenant)

    def binds(self, tenant: Tenant) -> list[tuple[str, str, bool]]:
        """The SAPI binary, read-only, where the sandbox shows this package; the tenant's
        session directory."""
        if not bundled(tenant):
            return session_binds(tenant)
        return [(os.path.realpath(PACKAGE_DIR), os.path.join(LIB_DIR, "tenantfpm"), True),
                *session_binds(tenant)]

    def channels(self, tenant: Tenant) -> Channels:
        """The worker's scoreboard page, and the pipe of its access.log lines."""
        board_fd, board = Board.create()
        ch = Channels(pass_fds=(board_fd,), worker_ends=(board_fd,), board=board)
        return ch.with_access_log(tenant)

    def inspect(self, pid: int, exe: str, depth: int) -> inspect.PhpState:
        """PHP's globals are in the php-cgi binary the worker runs, or in the libphp it
        maps (the SAPI's own program, or a command of the tenant's linked likewise)."""
        engine_binary = os.path.basename(exe) == os.path.basename(PHP_ENGINE_BINARY)
        return inspect.read_state(pid, exe, depth, library=None if engine_binary else "libphp")
