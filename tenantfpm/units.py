"""Duration and size units shared by every config file (SPEC 2, "Units")."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_FACTOR = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT])?B?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {None: 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_duration(value: object) -> float:
    """Seconds from "250ms"/"10s"/"5m"/"1h"/"1d" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"10s\", got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration may not be negative: {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as \"10s\", got {type(value).__name__}")
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"invalid duration {value!r}: "
                         "use e.g. \"250ms\", \"10s\", \"5m\", \"1h\", \"1d\"")
    return float(m.group(1)) * _DURATION_FACTOR[m.group(2)]


def parse_size(value: object) -> int:
    """Bytes from "512K"/"256M"/"1G" or a bare integer of bytes; "" means unset (0)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as \"256M\", got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size may not be negative: {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as \"256M\", got {type(value).__name__}")
    if value.strip() == "":
        return 0
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"invalid size {value!r}: use e.g. \"512K\", \"256M\", \"1G\" or bytes")
    unit = m.group(2).upper() if m.group(2) else None
    return int(m.group(1)) * _SIZE_FACTOR[unit]


def format_size(n: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)
