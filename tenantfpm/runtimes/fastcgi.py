"""Any program that accepts FastCGI connections on its inherited fd 0."""

from __future__ import annotations

import os

from tenantfpm.config.tenant import Tenant
from tenantfpm.runtimes.base import Runtime, worker_env


def command(tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
    rt = tenant.site.runtime
    argv = [os.path.realpath(rt.command[0]), *rt.command[1:]]
    env = worker_env(tenant)
    env.setdefault("PHP_FCGI_MAX_REQUESTS", str(max_requests))
    return argv, env


class FastCgi(Runtime):
    """Any FastCGI program: observed from /proc only."""

    type = "fastcgi"

    def command(self, tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
        return command(tenant, max_requests)
