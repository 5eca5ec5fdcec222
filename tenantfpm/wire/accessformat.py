"""PHP-FPM's access.format (fpm_log.c): which codes there are, and how a format parses.

Both access-log writers render from this parse's rules (pyworker/accesslog.py in Python,
sapi/accesslog.c in C, whose code list and header bound come from sapi/wire.h), and
`tenantfpm check` refuses what either would refuse.
"""

from __future__ import annotations

import re

CODES = "CdeflmMnopPqQrRstTu%"
MAX_HEADERS = 8  # %{Name}o in one format: the C writer captures that many response headers
TOKEN = re.compile(r"%(?:\{([^}]*)\})?([" + re.escape(CODES) + "])")

Part = str | tuple[str, str]  # a literal, or (code, modifier)


def parse(fmt: str) -> list[Part]:
    """The format as literals and (code, modifier) pairs; ValueError naming the first
    code FPM does not know, or more response headers than a worker captures."""
    parts: list[Part] = []
    pos = 0
    for m in [*TOKEN.finditer(fmt), None]:
        literal = fmt[pos:m.start() if m else len(fmt)]
        if "%" in literal:
            bad = literal[literal.index("%"):literal.index("%") + 2]
            raise ValueError(f"unknown access_format code {bad!r}; known: "
                             + " ".join("%" + c for c in CODES))
        parts.append(literal)
        if m:
            parts.append((m.group(2), m.group(1) or ""))
            pos = m.end()
    if sum(1 for p in parts if isinstance(p, tuple) and p[0] == "o" and p[1]) > MAX_HEADERS:
        raise ValueError(f"access_format names more than {MAX_HEADERS} response headers "
                         "(%{Name}o)")
    return [p for p in parts if p != ""]
