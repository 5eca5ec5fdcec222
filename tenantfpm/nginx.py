"""The nginx `server {}` block `tenantfpm add` and `tenantfpm nginx NAME` print: whole, so
that an admin can paste it into sites-available as it is.

The runtime says which locations reach the tenant (runtimes/*.nginx_locations); this
module wraps them in what every site needs: the tenant's domains, its document root and
index, and nginx's request body limit taken from the tenant's own PHP limits, so that
nginx neither refuses an upload PHP would take (nginx's default is 1 MB) nor buffers
one PHP will refuse.
"""

from __future__ import annotations

from tenantfpm import runtimes
from tenantfpm.config.model import IniValue
from tenantfpm.config.tenant import Tenant
from tenantfpm.units import parse_size

PHP_POST_MAX_DEFAULT = 8 << 20  # php.ini-production's post_max_size, PHP's own default


def body_limit(ini: dict[str, IniValue]) -> str:
    """client_max_body_size from post_max_size (the whole body, which an upload is part
    of) or else upload_max_filesize; "0" (nginx: no limit) when PHP sets none."""
    for key in ("post_max_size", "upload_max_filesize"):
        if key in ini:
            value = ini[key]
            if isinstance(value, bool | float) or str(value).strip() in ("-1", "0"):
                return "0"
            try:
                size = parse_size(value)
            except ValueError:
                continue  # validation reports it; the block keeps PHP's default
            return _nginx_size(size)
    return _nginx_size(PHP_POST_MAX_DEFAULT)


def _nginx_size(n: int) -> str:
    for unit, shift in (("g", 30), ("m", 20), ("k", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def server_block(tenant: Tenant, listen: str = "80") -> str:
    site = tenant.site
    names = " ".join(site.domains) if site.domains else f"{tenant.name}.localhost"
    lines = [
        "server {",
        f"    listen {listen};",
        f"    server_name {names};",
        *([] if site.domains else
          ["    # the tenant's file names no domains: set its domains = [...] or edit here"]),
        f"    root {site.root};",
        "    index index.php index.html index.htm;",
        f"    client_max_body_size {body_limit(site.php_ini())};",
        "",
        *("    " + line if line else "" for line in
          runtimes.of(tenant).nginx_locations(tenant).splitlines()),
        "}",
    ]
    return "\n".join(lines) + "\n"
