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
    function: str  # "sleep", "Shop\\Cart::total", "[INCLUDE_OR_EVAL]"
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


def read_state(pid: int, exe: str, depth: int = 20) -> PhpState:
    """`exe` names the binary in messages; what is read is the one the worker runs
    (/proc/PID/exe), whatever has been put at that path since."""
    running = f"/proc/{pid}/exe"
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
        where = symbols.globals_of(pid, running, st)
    except (OSError, LookupError) as e:
        raise Unavailable(str(e)) from None
    mem = Memory(pid)
    try:
        return _read(mem, off, where["executor_globals"], where["sapi_globals"], depth)
    except ReadError as e:
        raise Unavailable(f"reading the worker's memory failed: {e}") from None


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
    ex = mem.pointer(eg + off.eg_current_execute_data)
    seen: set[int] = set()
    pending_internal: list[Frame] = []  # internal frames wait for their caller's file:line
    while ex and len(state.frames) + len(pending_internal) < depth:
        if ex in seen or ex % 8:
            raise ReadError(f"execute_data chain is not a list at {ex:#x}")
        seen.add(ex)
        func = mem.pointer(ex + off.ex_func)
        frame = Frame(ex, "???", None, 0)
        user = False
        if func and func % 8 == 0:
            name = _zstring(mem, off, mem.pointer(func + off.fn_function_name))
            if name is None:
                kind = mem.u32(ex + off.ex_this_type_info) & off.call_kind_mask
                if kind == off.call_top_code:
                    break  # the script itself: where FPM's walk ends too
                name = "[INCLUDE_OR_EVAL]"
            else:
                scope = mem.pointer(func + off.fn_scope)
                cls = _zstring(mem, off, mem.pointer(scope + off.ce_name)) if scope else None
                name = f"{cls}::{name}" if cls else name
            frame.function = name
            user = mem.u8(func + off.fn_type) == off.user_function
            if user:
                frame.file = _zstring(mem, off, mem.pointer(func + off.op_array_filename))
                opline = mem.pointer(ex + off.ex_opline)
                frame.line = (mem.u32(opline + off.op_lineno) if opline and opline % 8 == 0
                              else mem.u32(func + off.op_array_line_start))
        if user:
            for f in pending_internal:
                f.file, f.line = frame.file, _caller_line(mem, off, ex)
            state.frames += pending_internal
            pending_internal = []
            state.frames.append(frame)
        else:
            pending_internal.append(frame)
        ex = mem.pointer(ex + off.ex_prev_execute_data)
    if pending_internal:  # called from the top-level script: its file and current line
        for f in pending_internal:
            f.file, f.line = _top_position(mem, off, ex)
        state.frames += pending_internal
    return state


def _caller_line(mem: Memory, off: Offsets, ex: int) -> int:
    opline = mem.pointer(ex + off.ex_opline)
    return mem.u32(opline + off.op_lineno) if opline and opline % 8 == 0 else 0


def _top_position(mem: Memory, off: Offsets, ex: int) -> tuple[str | None, int]:
    if not ex:
        return None, 0
    func = mem.pointer(ex + off.ex_func)
    if not func or mem.u8(func + off.fn_type) != off.user_function:
        return None, 0
    return (_zstring(mem, off, mem.pointer(func + off.op_array_filename)),
            _caller_line(mem, off, ex))
