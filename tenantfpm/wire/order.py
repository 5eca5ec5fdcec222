"""The warm PHP's order (sandbox/warm.py encodes it, sapi/order.c parses it): records of
a tag byte, a little-endian u32 length and the value, every value but the filter a
string without NUL. A step's fields follow the step's record.
"""

from __future__ import annotations

import struct

TAGS = {  # name (sapi/wire.h: ORDER_<name>): tag
    "ARGV": "a",  # one argv element
    "ENV": "e",  # "KEY=value"
    "CWD": "c",
    "HOSTNAME": "h",
    "NEW_ROOT": "R",  # the empty host directory the tmpfs root is mounted on
    "UID": "u",
    "GID": "g",
    "NOFILE": "r",  # "soft hard" RLIMIT_NOFILE (absent: kept)
    "CORE_DUMPS": "k",  # 0|1
    "POLICY": "P",  # scheduling policy
    "CGROUP": "G",  # a cgroup.procs file to join
    "NETNS": "n",  # the network namespace's handle
    "CAUGHT": "m",  # output caught 0|1
    "PASS_FDS": "p",  # how many descriptors the plan passes
    "SECCOMP": "B",  # the filter: struct sock_filter entries
    "STEP": "S",  # a step's op; its fields follow
    "STEP_TARGET": "t",
    "STEP_SOURCE": "s",
    "STEP_FSTYPE": "y",
    "STEP_FLAGS": "f",
    "STEP_DATA": "d",
    "STEP_CONTENT": "C",
    "STEP_NOFOLLOW": "N",
    "STEP_KIND": "K",
}
BOUNDS = {  # name (sapi/wire.h: ORDER_MAX_<name>): the most the parser takes
    "SIZE": 1 << 16,  # bytes of one order: a larger plan is cloned as usual
    "ARGS": 512,
    "ENV": 512,
    "CGROUPS": 8,
    "STEPS": 512,
    "FILTER": 4096,  # seccomp instructions
    "PASS_FDS": 8,
}
_LENGTH = struct.Struct("<I")


def record(name: str, value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return TAGS[name].encode() + _LENGTH.pack(len(raw)) + raw
