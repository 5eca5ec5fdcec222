"""SPEC 2's `[ini]` mapping for the python runtime: php.ini names to the worker's settings.

Pure (no Tenant, no effects) so that rules.py rejects a bad value at `check`
time with the very conversion the runtime uses when it starts the worker.
"""

from __future__ import annotations

import os
import re
from typing import Any

from tenantfpm.config.model import IniValue
from tenantfpm.units import parse_size

APP = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
SAME_NAME = ("memory_limit", "max_execution_time", "display_errors", "error_log")  # in the worker
_TRUE = {"1", "on", "yes", "true", "stderr", "stdout"}
_FALSE = {"0", "off", "no", "false", "", "none"}


def _php_size(value: IniValue) -> int:
    """php.ini's size syntax: bytes or K/M/G; -1 means no limit (0 here)."""
    if isinstance(value, bool | float):
        raise ValueError("expected a size such as \"128M\"")
    if str(value).strip() == "-1":
        return 0
    return parse_size(value)


def _flag(value: IniValue) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"expected On or Off, got {value!r}")


def _seconds(value: IniValue) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    try:
        n = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if n < 0:
        raise ValueError("may not be negative")
    return n


def _timezone(value: IniValue) -> str:
    name = str(value)
    if not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name) or not os.path.exists(
            os.path.join("/usr/share/zoneinfo", name)):
        raise ValueError(f"unknown time zone {name!r}")
    return name


def _absolute(value: IniValue) -> str:
    path = str(value)
    if not path.startswith("/") or "/../" in path + "/":
        raise ValueError(f"must be an absolute path inside the sandbox: {path!r}")
    return path


_CONVERT = {"memory_limit": _php_size, "max_execution_time": _seconds,
            "post_max_size": _php_size, "upload_max_filesize": _php_size,
            "display_errors": _flag, "date.timezone": _timezone, "error_log": _absolute}
SUPPORTED_INI = tuple(_CONVERT)


def settings(ini: dict[str, IniValue]) -> dict[str, Any]:
    """The worker's settings from `[ini]`; ValueError("key: why") on the first bad entry."""
    unsupported = sorted(set(ini) - set(SUPPORTED_INI))
    if unsupported:
        raise ValueError(f"not supported by the python runtime: {', '.join(unsupported)}; "
                         f"supported: {', '.join(SUPPORTED_INI)}")
    values: dict[str, Any] = {}
    for key, value in ini.items():
        try:
            values[key] = _CONVERT[key](value)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    out = {k: v for k, v in values.items() if k in SAME_NAME}
    bodies = [values[k] for k in ("post_max_size", "upload_max_filesize") if values.get(k)]
    if bodies:  # a whole body may not pass either limit
        out["body_limit"] = min(bodies)
    return out
