"""What a worker execs, per runtime type: argv, environment, generated files."""

from __future__ import annotations

from tenantfpm.config.tenant import Tenant
from tenantfpm.runtimes import fastcgi, php, python


def command(tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
    if tenant.site.runtime.type == "php":
        return php.command(tenant, max_requests)
    if tenant.site.runtime.type == "python":
        return python.command(tenant, max_requests)
    return fastcgi.command(tenant, max_requests)


def prepare(tenant: Tenant) -> None:
    """Write what workers need before the first spawn (per-tenant php.ini)."""
    if tenant.site.runtime.type == "php":
        php.write_ini(tenant)
