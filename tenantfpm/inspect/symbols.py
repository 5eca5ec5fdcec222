"""Where PHP's globals are in a running worker: the binary's dynamic symbols + its load base."""

from __future__ import annotations

import io
import os
import struct

from tenantfpm import safefs

WANTED = ("executor_globals", "sapi_globals")


MAX_BINARY = 256 << 20


_CACHE: dict[tuple[int, int, float], tuple[dict[str, int], int]] = {}


def _symbols(path: str, identity: tuple[int, int, float]) -> tuple[dict[str, int], int]:
    """Symbol values and the lowest PT_LOAD vaddr (0 for a PIE), per binary (device,
    inode, mtime): one read per binary, whichever worker's /proc/PID/exe names it."""
    if identity not in _CACHE:
        if len(_CACHE) >= 16:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[identity] = _read_symbols(path)
    return _CACHE[identity]


def _read_symbols(path: str) -> tuple[dict[str, int], int]:
    """Read with safefs (no FIFO, no mapping); a malformed ELF is a LookupError. pyelftools
    is imported here, at the first slow request's backtrace: 5 MB the master need not
    carry until then."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        elf = ELFFile(io.BytesIO(safefs.read_regular(path, MAX_BINARY)))
        first_load = min(seg["p_vaddr"] for seg in elf.iter_segments()
                         if seg["p_type"] == "PT_LOAD")
        found: dict[str, int] = {}
        for section in elf.iter_sections():
            if not isinstance(section, SymbolTableSection):
                continue
            for name in WANTED:
                if name in found:
                    continue
                for sym in section.get_symbol_by_name(name) or []:
                    if sym["st_value"]:
                        found[name] = sym["st_value"]
    except (ELFError, ValueError, KeyError, struct.error) as e:
        raise LookupError(f"{path}: not a readable ELF binary ({e})") from None
    return found, first_load


def globals_of(pid: int, exe: str, st: os.stat_result | None = None) -> dict[str, int]:
    """Absolute addresses of executor_globals and sapi_globals in process `pid`."""
    st = st or os.stat(exe)
    symbols, first_load = _symbols(exe, (st.st_dev, st.st_ino, st.st_mtime))
    missing = [n for n in WANTED if n not in symbols]
    if missing:
        raise LookupError(f"{exe} does not export {', '.join(missing)} (a ZTS or static build?)")
    base = _load_base(pid, exe, st)
    return {name: base - first_load + value for name, value in symbols.items()}


def _load_base(pid: int, exe: str, st: os.stat_result) -> int:
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 6 or int(fields[2], 16) != 0:
                continue
            dev_major, dev_minor = (int(x, 16) for x in fields[3].split(":"))
            if int(fields[4]) == st.st_ino and os.makedev(dev_major, dev_minor) == st.st_dev:
                return int(fields[0].split("-")[0], 16)
    raise LookupError(f"{exe} is not mapped in process {pid}")


def mapped_library(pid: int, prefix: str) -> tuple[str, str]:
    """(/proc/PID/map_files/... of the first mapping of a file named `prefix`*.so, that
    file's name as the process sees it). The map_files link opens the mapped inode itself,
    not whatever the tenant put at the name since."""
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or int(fields[2], 16) != 0:
                continue
            name = fields[5].rstrip("\n")
            base = os.path.basename(name)
            if base.startswith(prefix) and base.endswith(".so"):
                return f"/proc/{pid}/map_files/{fields[0]}", name
    raise LookupError(f"no {prefix}*.so is mapped in process {pid}")
