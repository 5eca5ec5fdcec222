"""Process-tree reading the tests share: which processes a given one has forked."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid`, whichever of its threads forked them, read
    from /proc/*/stat (the comm before the last ')' may hold spaces and parentheses)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(entry))
    return out
