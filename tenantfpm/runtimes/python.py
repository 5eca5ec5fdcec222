"""The python runtime: a WSGI app served by tenantfpm's own worker (tenantfpm.pyworker).

Workers are forked from the tenant's zygote (pyworker/zygote.py, the PHP
zygote's protocol), which imports the app once (`lazy_app`: each worker does).

The worker runs in the tenant's interpreter (`runtime.command`, e.g. its
virtualenv's python), so it imports the worker package from a read-only bind
of this package's directory (the sandbox) or from where it is installed (no
sandbox). SPEC 2's `[ini]` mapping turns into the worker's settings here, and
config/python_ini.py (shared with the `check` rules) does the conversion.
"""

from __future__ import annotations

import json
import os

from tenantfpm import pm
from tenantfpm.config.python_ini import settings
from tenantfpm.config.tenant import Tenant
from tenantfpm.runtimes.base import Channels, Runtime, nginx_location, worker_env
from tenantfpm.wire.fds import LIB_DIR
from tenantfpm.wire.scoreboard import Board

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../tenantfpm
BOOT = ("import sys; sys.path.insert(0, {lib!r}); "
        "from tenantfpm.pyworker.{module} import main; main()")


def command(tenant: Tenant, max_requests: int | None) -> tuple[list[str], dict[str, str]]:
    """A worker serving on its own (`max_requests`), or the zygote that forks them (None)."""
    site = tenant.site
    ini = site.php_ini()
    lib = LIB_DIR if site.isolation.enabled else os.path.dirname(PACKAGE_DIR)
    config = {"app": site.runtime.app, "pool": tenant.name,
              "access_format": site.log.access_format if site.log.access else "",
              "master_pid": os.getpid(), **settings(ini)}
    if max_requests is None:
        config["lazy_app"] = site.runtime.lazy_app
        config["spare_delay_ms"] = pm.spare_delay_ms(site.pm)
    else:
        config["max_requests"] = max_requests
    module = "zygote" if max_requests is None else "main"
    # not realpath(): a virtualenv's python finds its site-packages through its own path
    argv = [*site.runtime.command, "-c", BOOT.format(lib=lib, module=module),
            json.dumps(config)]
    env = worker_env(tenant)
    env.setdefault("PYTHONUNBUFFERED", "1")  # print() reaches error.log when it happens
    if "date.timezone" in ini:
        env["TZ"] = str(ini["date.timezone"])
    return argv, env


def binds(tenant: Tenant) -> list[tuple[str, str, bool]]:
    """What the sandbox needs besides the tenant's own binds: the worker package, read-only
    (by its real path: binds are mounted without following links)."""
    return [(os.path.realpath(PACKAGE_DIR), os.path.join(LIB_DIR, "tenantfpm"), True)]


class Python(Runtime):
    """tenantfpm's own WSGI worker: it publishes a scoreboard, writes its own access.log and
    its stack on request (fd 4 the scoreboard, 5 the trace pipe, 6 access.log; fd 3 is the
    zygote's channel)."""

    type = "python"
    reports_requests = True
    zygote = True

    def command(self, tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
        return command(tenant, max_requests)

    def zygote_command(self, tenant: Tenant) -> tuple[list[str], dict[str, str]]:
        return command(tenant, None)

    def binds(self, tenant: Tenant) -> list[tuple[str, str, bool]]:
        return binds(tenant)

    def channels(self, tenant: Tenant) -> Channels:
        board_fd, board = Board.create()
        try:
            trace, trace_w = os.pipe()
        except OSError:
            os.close(board_fd)
            board.close()
            raise
        os.set_blocking(trace, False)
        ch = Channels(pass_fds=(board_fd, trace_w), worker_ends=(board_fd, trace_w),
                      board=board, trace=trace)
        return ch.with_access_log(tenant)

    def nginx_locations(self, tenant: Tenant) -> str:
        """The app routes every path itself."""
        return nginx_location(tenant, "/", 'fastcgi_param SCRIPT_NAME ""',
                              "fastcgi_param PATH_INFO $uri")
