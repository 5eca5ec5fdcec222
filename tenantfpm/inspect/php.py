"""A busy php-cgi worker's request and call stack, read from its memory.

Follows the walk PHP-FPM's slowlog makes (sapi/fpm/fpm/fpm_php_trace.c):
EG(current_execute_data), then prev_execute_data outward; per frame the
function name, its class, and for user code the file and the current opline's
line. Internal functions (sleep(), curl_exec()...) take the file and line of
the PHP code that called them. The top-level script frame ends the walk;
include/eval frames show as [INCLUDE_OR_EVAL], as in FPM.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from tenantfpm import safefs
from tenantfpm.inspect import symbols
from tenantfpm.inspect.memory import Memory, ReadError
from tenantfpm.inspect.offsets import TABLES, Offsets

MAX_STRING = 4096


class Unavailable(Exception):
    """The state cannot be read (unknown PHP, not mapped, a read failed); says why."""


@dataclass
class Frame:
    address: int
    function: str  # "sleep", "total" (FPM names no class), "[INCLUDE_OR_EVAL]"
    file: str | None
    line: int

    def slowlog(self) -> str:
        """One line of PHP-FPM's slow.log."""
        return f"[0x{self.address:016x}] {self.function}() {self.file or 'unknown'}:{self.line}"


@dataclass
class PhpState:
    script: str | None
    method: str | None
    uri: str | None  # the request URI with its query string, as FPM's status shows it
    query: str | None
    content_length: int | None
    frames: list[Frame] = field(default_factory=list)


# the Zend module API number every build embeds ("API20220829,NTS") -> PHP minor version
ZEND_API = {"20200930": "8.0", "20210902": "8.1", "20220829": "8.2", "20230831": "8.3",
            "20240924": "8.4"}


MAX_BINARY = 256 << 20  # bytes of a runtime binary the master reads at most
MAX_FRAMES = 1000  # execute_data records followed at most


def php_version(exe: str, identity: tuple[int, int, float] | None = None) -> str:
    """"8.2", read from the binary's bytes: the master never runs a tenant's binary as
    root, never maps it (a truncated mapping is SIGBUS) and never blocks opening it
    (a FIFO in its place). `identity` (device, inode, mtime) keys the cache, so every
    worker's /proc/PID/exe of one binary is read once."""
    if identity is None:
        return _php_version(exe)
    if identity not in _VERSIONS:
        if len(_VERSIONS) >= 16:
            _VERSIONS.pop(next(iter(_VERSIONS)))
        try:
            _VERSIONS[identity] = _php_version(exe)
        except Unavailable as e:
            _VERSIONS[identity] = e
    found = _VERSIONS[identity]
    if isinstance(found, Unavailable):
        raise found
    return found


_VERSIONS: dict[tuple[int, int, float], str | Unavailable] = {}


def _php_version(exe: str) -> str:
    try:
        data = safefs.read_regular(exe, MAX_BINARY)
        found = re.search(rb"API(\d{8}),(NTS|TS)\0", data)
        tag = (found.group(1).decode(), found.group(2).decode()) if found else None
    except (OSError, ValueError) as e:
        raise Unavailable(f"cannot read {exe}: {e}") from None
    if tag is None:
        raise Unavailable(f"{exe} is not a PHP binary (no Zend API tag)")
    api, kind = tag
    if kind != "NTS":
        raise Unavailable(f"{exe} is a thread-safe (ZTS) build: its globals are per thread")
    if api not in ZEND_API:
        raise Unavailable(f"{exe} has Zend API {api}, which no offset table covers")
    return ZEND_API[api]


def read_state(pid: int, exe: str, depth: int = 20, library: str | None = None) -> PhpState:
    """`exe` names the binary in messages; what is read is the one the worker runs
    (/proc/PID/exe), whatever has been put at that path since. With `library` (the
    project's SAPI: PHP is libphp8.2.so), the mapped library of that name is read, through
    /proc/PID/map_files: the very inode the worker mapped."""
    running = f"/proc/{pid}/exe"
    if library is not None:
        try:
            running, exe = symbols.mapped_library(pid, library)
        except (OSError, LookupError) as e:
            raise Unavailable(str(e)) from None
    try:
        st = os.stat(running)
    except OSError as e:
        raise Unavailable(f"cannot read {exe}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise Unavailable(f"{exe} is not a regular file")
    version = php_version(running, (st.st_dev, st.st_ino, st.st_mtime))
    off = TABLES.get(version)
    if off is None:
        raise Unavailable(f"PHP {version} has no offset table (known: {', '.join(TABLES)})")
    try:
        where = _globals(pid, running, st, library is not None)
    except (OSError, LookupError) as e:
        raise Unavailable(str(e)) from None
    mem = Memory(pid)
    try:
        return _read(mem, off, where["executor_globals"], where["sapi_globals"], depth)
    except ReadError as e:
        raise Unavailable(f"reading the worker's memory failed: {e}") from None


def _globals(pid: int, running: str, st: os.stat_result, in_library: bool) -> dict[str, int]:
    """EG and SG. A program linked against libphp that uses them itself (the project's
    SAPI does) gets its own copies by copy relocation, and the library then uses those:
    look in the program first."""
    if in_library:
        exe = f"/proc/{pid}/exe"
        try:
            return symbols.globals_of(pid, exe, os.stat(exe))
        except LookupError:
            pass
    return symbols.globals_of(pid, running, st)


def _zstring(mem: Memory, off: Offsets, ptr: int) -> str | None:
    if not ptr:
        return None
    length = mem.pointer(ptr + off.str_len)
    if length > MAX_STRING:
        raise ReadError(f"implausible string length {length}")
    if length == 0:
        return ""
    return mem.read(ptr + off.str_val, length).decode(errors="replace")


def _cstring(mem: Memory, ptr: int) -> str | None:
    return mem.cstring(ptr, 1024) if ptr else None


def _read(mem: Memory, off: Offsets, eg: int, sg: int, depth: int) -> PhpState:
    ri = sg + off.sg_request_info
    query = _cstring(mem, mem.pointer(ri + off.ri_query_string))
    uri = _cstring(mem, mem.pointer(ri + off.ri_request_uri))
    state = PhpState(
        script=_cstring(mem, mem.pointer(ri + off.ri_path_translated)),
        method=_cstring(mem, mem.pointer(ri + off.ri_request_method)),
        uri=(uri + ("?" + query if query else "")) if uri is not None else None,
        query=query,
        content_length=mem.pointer(ri + off.ri_content_length),
    )
    # FPM's walk (fpm_php_trace.c): each frame is its function's name (no class), at the
    # file:line where it was called: the current line of the nearest user frame above it
    chain: list[int] = []
    ex = mem.pointer(eg + off.eg_current_execute_data)
    while ex and len(chain) < MAX_FRAMES:
        if ex in chain or ex % 8:
            raise ReadError(f"execute_data chain is not a list at {ex:#x}")
        chain.append(ex)
        ex = mem.pointer(ex + off.ex_prev_execute_data)
    for i, ex in enumerate(chain):
        if len(state.frames) >= depth:
            break
        func = mem.pointer(ex + off.ex_func)
        name = "???"
        if func and func % 8 == 0:
            fname = _zstring(mem, off, mem.pointer(func + off.fn_function_name))
            if fname is None:
                kind = mem.u32(ex + off.ex_this_type_info) & off.call_kind_mask
                if kind == off.call_top_code:
                    break  # the script itself: where FPM's walk ends too
                fname = "[INCLUDE_OR_EVAL]"
            name = fname
        file, line = None, 0
        for caller in chain[i + 1:]:
            cf = mem.pointer(caller + off.ex_func)
            if cf and cf % 8 == 0 and mem.u8(cf + off.fn_type) == off.user_function:
                file = _zstring(mem, off, mem.pointer(cf + off.op_array_filename))
                line = _caller_line(mem, off, caller)
                break
        state.frames.append(Frame(ex, name, file, line))
    return state


def _caller_line(mem: Memory, off: Offsets, ex: int) -> int:
    opline = mem.pointer(ex + off.ex_opline)
    return mem.u32(opline + off.op_lineno) if opline and opline % 8 == 0 else 0
