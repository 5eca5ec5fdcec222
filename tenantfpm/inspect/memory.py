"""Bounded reads of another process's memory (process_vm_readv)."""

from __future__ import annotations

import ctypes
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                                   ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]
_libc.process_vm_readv.restype = ctypes.c_ssize_t

USER_SPACE_END = 0x0000_8000_0000_0000  # x86_64 canonical lower half


class ReadError(OSError):
    pass


class Memory:
    """One process's address space; every read has a size cap and a pointer check."""

    MAX_READ = 1 << 16

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.reads = 0

    def read(self, addr: int, size: int) -> bytes:
        if not (4096 <= addr < USER_SPACE_END) or not 0 < size <= self.MAX_READ:
            raise ReadError(f"refusing to read {size} bytes at {addr:#x}")
        self.reads += 1
        buf = ctypes.create_string_buffer(size)
        local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
        remote = _IoVec(addr, size)
        n = _libc.process_vm_readv(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if n != size:
            err = ctypes.get_errno()
            raise ReadError(err, f"reading {size} bytes at {addr:#x} of pid {self.pid}: "
                                 f"{os.strerror(err) if n < 0 else 'short read'}")
        return buf.raw

    def pointer(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def u32(self, addr: int) -> int:
        return struct.unpack("<I", self.read(addr, 4))[0]

    def u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def cstring(self, addr: int, limit: int = 4096) -> str:
        raw = self.read(addr, limit) if self._readable(addr, limit) else self._upto_page(addr)
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    def _readable(self, addr: int, size: int) -> bool:
        """A fixed-size read may cross into an unmapped page; stay within this one if so."""
        try:
            self.read(addr, size)
        except ReadError:
            return False
        return True

    def _upto_page(self, addr: int) -> bytes:
        return self.read(addr, 4096 - addr % 4096)
