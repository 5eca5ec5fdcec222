"""What a worker runs, per `[runtime] type`: one Runtime each (base.py is the interface)."""

from __future__ import annotations

from tenantfpm.config.tenant import Tenant
from tenantfpm.runtimes.base import Channels, Runtime
from tenantfpm.runtimes.fastcgi import FastCgi
from tenantfpm.runtimes.php import Php
from tenantfpm.runtimes.php_cgi import PhpCgi
from tenantfpm.runtimes.python import Python

RUNTIMES: dict[str, Runtime] = {r.type: r for r in (Php(), PhpCgi(), Python(), FastCgi())}

__all__ = ["RUNTIMES", "Channels", "Runtime", "command", "of", "prepare"]


def of(tenant: Tenant) -> Runtime:
    return RUNTIMES[tenant.site.runtime.type]


def command(tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
    return of(tenant).command(tenant, max_requests)


def prepare(tenant: Tenant) -> None:
    """Write what workers need before the first spawn (per-tenant php.ini)."""
    of(tenant).prepare(tenant)
