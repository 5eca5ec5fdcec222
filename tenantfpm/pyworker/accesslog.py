"""PHP-FPM's access.format (fpm_log.c), rendered by the python worker for each request.

The format is parsed once per worker (by wire.accessformat, the one definition both
writers follow); rendering is a join over the parts, so
a request pays only for the fields the format names. The values are any web client's
(a User-Agent, a Basic auth user name): their control characters are written as \\xNN,
so one request is one line and no terminal escape reaches whoever reads the log. The
line goes to a pipe the master reads (master/stdio.py), never to the log itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tenantfpm.wire import accessformat

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Entry:
    """What one finished request leaves for its access-log line."""

    params: dict[str, str]
    status: int
    started: float  # wall clock
    duration: float  # seconds
    cpu: float  # CPU seconds
    memory: int  # bytes
    pool: str
    pid: int
    ppid: int
    headers: list[tuple[str, str]] = field(default_factory=list)


def _duration(mod: str, e: Entry) -> str:
    """FPM: seconds by default; milliseconds/mili and microseconds/micro on request."""
    if mod in ("microseconds", "micro"):
        return str(round(e.duration * 1e6))
    scale = 1e3 if mod in ("milliseconds", "mili", "milli") else 1.0
    return f"{e.duration * scale:.3f}"


def _memory(mod: str, e: Entry) -> str:
    return str(e.memory // {"bytes": 1, "kilo": 1024, "mega": 1 << 20}.get(mod, 1))


def _header(name: str, e: Entry) -> str:
    for k, v in e.headers:
        if k.lower() == name.lower():
            return v
    return "-"


def _cpu(mod: str, e: Entry) -> str:
    return f"{(e.cpu / e.duration * 100) if e.duration > 0 else 0.0:.2f}"


def _query(e: Entry) -> str:
    return e.params.get("QUERY_STRING", "")


FIELDS: dict[str, Callable[[str, Entry], str]] = {
    "C": _cpu,
    "d": _duration,
    "e": lambda mod, e: e.params.get(mod, "-"),
    "f": lambda mod, e: e.params.get("SCRIPT_FILENAME", "-") or "-",
    "l": lambda mod, e: e.params.get("CONTENT_LENGTH", "") or "0",
    "m": lambda mod, e: e.params.get("REQUEST_METHOD", "-"),
    "M": _memory,
    "n": lambda mod, e: e.pool,
    "o": lambda mod, e: _header(mod, e),
    "p": lambda mod, e: str(e.pid),
    "P": lambda mod, e: str(e.ppid),
    "q": lambda mod, e: _query(e),
    "Q": lambda mod, e: "?" if _query(e) else "",
    "r": lambda mod, e: e.params.get("REQUEST_URI", "").split("?", 1)[0] or "-",
    "R": lambda mod, e: e.params.get("REMOTE_ADDR", "-"),
    "s": lambda mod, e: str(e.status),
    "t": lambda mod, e: time.strftime(mod or "%d/%b/%Y:%H:%M:%S %z",
                                      time.localtime(e.started)),
    "T": lambda mod, e: time.strftime(mod or "%d/%b/%Y:%H:%M:%S %z", time.localtime()),
    "u": lambda mod, e: e.params.get("REMOTE_USER", ""),
    "%": lambda mod, e: "%",
}

Part = str | tuple[Callable[[str, Entry], str], str]


def compile_format(fmt: str) -> list[Part]:
    """The format as literal strings and (field, modifier) pairs; ValueError as
    wire.accessformat.parse."""
    return [p if isinstance(p, str) else (FIELDS[p[0]], p[1])
            for p in accessformat.parse(fmt)]


def _escape(value: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def render(parts: list[Part], e: Entry) -> str:
    return "".join(p if isinstance(p, str) else _escape(p[0](p[1], e)) for p in parts)
