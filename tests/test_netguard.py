"""The firewall's rules, as text: what nft is given (the effect is tested live in
tests/integration/test_attacks.py)."""

from tenantfpm.netguard import ruleset, table_name
from tenantfpm.ratelimit import TokenBucket


def test_ruleset_rejects_new_connections_from_tenant_uids_to_protected_ports():
    text = ruleset("tenantfpm_x", {1002, 1001}, {9253, 19001})
    assert "elements = { 1001, 1002 }" in text and "elements = { 9253, 19001 }" in text
    assert ('oifname "lo" tcp flags & (syn | ack) == syn tcp dport @protected_ports '
            "meta skuid @tenant_uids reject with tcp reset") in text
    assert 'iifname "tf*" tcp dport @protected_ports reject' in text
    # declared, deleted, re-created: one atomic transaction whatever was there
    assert text.index("delete table inet tenantfpm_x") < text.index("set tenant_uids")


def test_ruleset_with_nothing_to_protect_is_valid():
    text = ruleset("t", set(), set())
    assert "elements" not in text and "type uid;" in text


def test_table_name_is_safe_for_nft():
    assert table_name("tenantfpm-test-tfpm-ab/c") == "tenantfpm_tenantfpm_test_tfpm_ab_c"


def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    b = TokenBucket(rate=1000, burst=4000)
    assert b.available(0.0) == 4000
    b.take(4000)
    assert b.available(0.0) == 0 and b.wait(1000) == 1.0
    assert b.available(2.0) == 2000
    assert b.available(100.0) == 4000
    assert TokenBucket(rate=0, burst=0).available(0.0) > 1 << 20  # 0 = unlimited
