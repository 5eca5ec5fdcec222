"""Lines of /proc/self/mountinfo, parsed once for every reader in cgroups/.

Format (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNT_POINT MOUNT_OPTIONS [OPTIONAL...]
- FSTYPE SOURCE SUPER_OPTIONS`; the optional fields vary in number, hence the
split at " - ".
"""

from __future__ import annotations

from dataclasses import dataclass

PATH = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    target: str
    options: tuple[str, ...]  # the mount point's own: rw, nosuid, relatime ...
    fstype: str
    super_options: tuple[str, ...]  # the filesystem's: memory, nsdelegate ...


def parse(text: str) -> list[Mount]:
    """Every mount in listing order (on a shared mount point the last one is on top)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 3:
            continue
        mounts.append(Mount(target=_unescape(fields[4]), options=tuple(fields[5].split(",")),
                            fstype=tail[0], super_options=tuple(tail[2].split(","))))
    return mounts


def read(path: str = PATH) -> list[Mount]:
    with open(path) as f:
        return parse(f.read())


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(esc, ch)
    return path
