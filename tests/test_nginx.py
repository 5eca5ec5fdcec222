"""The nginx server block `add` prints (nginx.py); nginx itself runs it in
tests/integration/test_web_servers.py."""

from __future__ import annotations

import pydantic
import pytest

from tenantfpm import nginx
from tenantfpm.config.model import Site
from tenantfpm.config.rules import parse_listen
from tenantfpm.config.tenant import Tenant


def tenant(**site) -> Tenant:
    s = Site.model_validate({"name": "shop", "user": "alice", "root": "/srv/shop", **site})
    return Tenant(site=s, listen=parse_listen("/run/t/shop.sock"), log_dir="/var/log/t",
                  run_dir="/run/t", uid=1001, gid=1001)


@pytest.mark.parametrize(("ini", "limit"), [
    ({}, "8m"),  # PHP's own post_max_size
    ({"post_max_size": "16M", "upload_max_filesize": "8M"}, "16m"),
    ({"upload_max_filesize": "2G"}, "2g"),
    ({"post_max_size": 1536}, "1536"),
    ({"post_max_size": "0"}, "0"),  # PHP: no limit; nginx: the same
    ({"post_max_size": "-1"}, "0"),
])
def test_body_limit_follows_the_tenants_php_limits(ini, limit):
    assert nginx.body_limit(ini) == limit


def test_php_server_block_is_whole():
    block = nginx.server_block(tenant(domains=["shop.example", "www.shop.example"],
                                      ini={"post_max_size": "32M"}))
    assert block.startswith("server {\n    listen 80;\n")
    assert "    server_name shop.example www.shop.example;\n" in block
    assert "    root /srv/shop;\n" in block and "    index index.php" in block
    assert "    client_max_body_size 32m;\n" in block
    assert "try_files $uri $uri/ /index.php$is_args$args;" in block  # a front controller
    assert "fastcgi_pass unix:/run/t/shop.sock;" in block
    assert block.count("{") == block.count("}") and block.endswith("}\n")


def test_without_domains_the_block_says_where_they_go():
    block = nginx.server_block(tenant(), listen="127.0.0.1:8080")
    assert "listen 127.0.0.1:8080;" in block and "server_name shop.localhost;" in block
    assert "domains = [" in block  # where to name them


@pytest.mark.parametrize("bad", ["shop example", "shop.example;", "-x.example", "a" * 64,
                                 "ex{ample}.com", "Shop.Example"])
def test_a_domain_that_could_break_the_block_is_refused(bad):
    with pytest.raises(pydantic.ValidationError):
        tenant(domains=[bad])
