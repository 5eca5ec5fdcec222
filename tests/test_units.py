import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantfpm.units import format_size, parse_duration, parse_size


@pytest.mark.parametrize("text,seconds", [
    ("250ms", 0.25), ("10s", 10), ("5m", 300), ("1h", 3600), ("1d", 86400), (7, 7), ("0", 0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10x", "-1s", "", "s", True, -3, [1]])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("text,n", [("512K", 512 << 10), ("256M", 256 << 20), ("1G", 1 << 30),
                                    (4096, 4096), ("", 0), ("64m", 64 << 20)])
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["12Q", "-5M", "1.5G", False])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@given(st.integers(min_value=1, max_value=1 << 40))
def test_size_format_round_trip(n):
    assert parse_size(format_size(n)) == n
