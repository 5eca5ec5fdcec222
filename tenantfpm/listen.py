"""The tenant's listening socket: created and held by the master, fd 0 of every worker.

It outlives worker generations (reload never closes it). allowed_clients is
enforced in the kernel with a classic BPF filter on the listening socket, which
drops SYNs from other sources: php-cgi ignores FCGI_WEB_SERVER_ADDRS on an
inherited socket, and nothing else sits between the client and the worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import ipaddress
import os
import pwd
import socket
import stat
import struct

from tenantfpm import safefs
from tenantfpm.config.rules import ListenAddress

SO_ATTACH_FILTER = 26
_SKF_NET_OFF = -0x100000 & 0xFFFFFFFF
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06


def _bpf_allow_sources(addresses: list[str], v6: bool) -> list[tuple[int, int, int, int]]:
    """Accept a packet only if its IP source is one of `addresses`."""
    words_per = 4 if v6 else 1
    src_off = 8 if v6 else 12
    blocks = []
    for a in addresses:
        packed = ipaddress.ip_address(a).packed
        blocks.append([struct.unpack_from("!I", packed, 4 * i)[0] for i in range(words_per)])
    prog: list[tuple[int, int, int, int]] = []
    block_len = 2 * words_per
    total = block_len * len(blocks)  # then: ret 0 ; ret accept
    for b, words in enumerate(blocks):
        for w, word in enumerate(words):
            here = b * block_len + 2 * w + 1  # index of the jeq
            accept = total + 1
            next_block = (b + 1) * block_len
            last = w == words_per - 1
            prog.append((_LD_W_ABS, 0, 0, (_SKF_NET_OFF + src_off + 4 * w) & 0xFFFFFFFF))
            jt = accept - here - 1 if last else 0
            jf = next_block - here - 1
            prog.append((_JEQ_K, jt, jf, word))
    prog.append((_RET_K, 0, 0, 0))
    prog.append((_RET_K, 0, 0, 0xFFFFFFFF))
    return prog


def attach_allowlist(sock: socket.socket, addresses: list[str]) -> None:
    v6 = sock.family == socket.AF_INET6
    addrs = [a for a in addresses if (ipaddress.ip_address(a).version == 6) == v6]
    prog = _bpf_allow_sources(addrs, v6)
    arr = (ctypes.c_uint8 * (8 * len(prog)))()
    for i, (code, jt, jf, k) in enumerate(prog):
        struct.pack_into("=HBBI", arr, 8 * i, code, jt, jf, k)
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(arr))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_listener(addr: ListenAddress, *, owner: str, group: str, mode: str, backlog: int,
                  allowed_clients: list[str]) -> socket.socket:
    if addr.path is not None:
        # only root can change the directory, so the path means the same thing from the
        # check to the bind; an old socket may be replaced, nothing else ever is
        os.close(safefs.open_trusted_dir(os.path.dirname(addr.path), create_mode=0o755))
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(addr.path).st_mode):
                raise safefs.UnsafePath(addr.path, "exists and is not a socket")
            os.unlink(addr.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # the final mode from the first moment, by umask (chmod would follow a link)
        old_umask = os.umask(0o777 & ~int(mode, 8))
        try:
            sock.bind(addr.path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chown(addr.path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid,
                 follow_symlinks=False)
    else:
        family = socket.AF_INET6 if ":" in (addr.host or "") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if allowed_clients:
            attach_allowlist(sock, allowed_clients)
        sock.bind((addr.host, addr.port))
    sock.listen(backlog)
    return sock


def path_inode(addr: ListenAddress) -> int | None:
    """The inode of a unix listener's file just after bind: what close_listener removes."""
    if addr.path is None:
        return None
    try:
        return os.lstat(addr.path).st_ino
    except OSError:
        return None


def close_listener(sock: socket.socket, addr: ListenAddress, inode: int | None) -> None:
    """Close, and remove the socket file if it is still this socket's (not one another
    tenant or master has bound at the same path since)."""
    sock.close()
    if addr.path is None or inode is None:
        return
    with contextlib.suppress(OSError):
        if os.lstat(addr.path).st_ino == inode:
            os.unlink(addr.path)
