"""Process-tree reading the tests share: which processes a given one has forked."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def parent_of(pid: int) -> int:
    """`pid`'s parent, read from /proc/PID/stat (the comm before the last ')' may hold
    spaces and parentheses)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def minor_faults(pid: int) -> int:
    """`pid`'s minor page faults so far (copies on write among them), from /proc/PID/stat."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid`, whichever of its threads forked them."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if parent_of(int(entry)) == pid:
                    out.add(int(entry))
    return out
