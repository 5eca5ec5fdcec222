"""A seccomp filter: the kernel interfaces a tenant never needs and an attacker would.

Without it, a tenant could still create a user namespace (an empty capability
bounding set does not stop that; inside, the process holds every capability
of the new namespace) and mount, unshare or pivot_root there, which is how
most container escapes reach kernel bugs. Also denied: ptrace, bpf,
perf_event_open, userfaultfd, io_uring, keyrings, module and kexec calls.

Denied because a tenant's own processes must not reach each other's descriptors or
memory (the zygote's channel to the master, the web server's connection, a worker's
pages): pidfd_open and pidfd_getfd (ENOSYS, so code that probes for them falls back),
process_vm_readv/writev and process_madvise; prctl(PR_SET_DUMPABLE) with anything but 0,
so a process made non-dumpable (the zygotes, hence their workers) stays so and
/proc/PID/mem of it stays root's. And setsockopt(SOL_SOCKET, SO_LINGER): a socket
whose close() blocks for as long as its owner likes is the one weapon against whoever
drops a passed descriptor last (nginx, the master; docs/security.md); without it no
socket a tenant makes can block a close.
clone() with any namespace flag fails with EPERM; clone3() with ENOSYS so libc
falls back to clone(), whose flags a classic BPF filter can see. Syscalls of
another ABI (i386, x32) are refused outright, so they cannot route around the
list. Everything else is allowed: this is a deny list in front of a process
that already runs without privileges, not a policy of its own.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # struct seccomp_data (little-endian low word of args[0])
OFF_ARG1, OFF_ARG2 = 24, 32  # int arguments: the kernel reads only their low word too

CLONE = 56
CLONE3 = 435
NAMESPACE_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                   | 0x20000000 | 0x40000000)  # NEWNS CGROUP UTS IPC USER PID NET

DENIED = {  # x86_64 numbers
    "ptrace": 101, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "pivot_root": 155, "init_module": 175, "delete_module": 176,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "setns": 308, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "process_vm_readv": 310, "process_vm_writev": 311, "process_madvise": 440,
}
NOT_THERE = {"pidfd_open": 434, "pidfd_getfd": 438}  # ENOSYS: "this kernel has none"
SETSOCKOPT, SOL_SOCKET, SO_LINGER = 54, 1, 13
PRCTL, PR_SET_DUMPABLE = 157, 4
FIRST_LOOKED_AT = min([*DENIED.values(), *NOT_THERE.values(), CLONE, CLONE3, SETSOCKOPT,
                       PRCTL])

Insn = tuple[int, int, int, int]

_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


def program() -> list[Insn]:
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    prog: list[Insn] = [
        (LD_W_ABS, 0, 0, OFF_ARCH),
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, eperm),  # another ABI
        (LD_W_ABS, 0, 0, OFF_NR),
        (JGE_K, 0, 1, X32_SYSCALL_BIT),
        (RET_K, 0, 0, eperm),  # x32
        # the hot path first: read, write, close, poll, mmap, writev, socket I/O... are all
        # below the lowest number the rest looks at; they leave after three compares
        (JGE_K, 1, 0, FIRST_LOOKED_AT),
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    enosys = SECCOMP_RET_ERRNO | errno.ENOSYS
    allow = SECCOMP_RET_ALLOW
    for nr in sorted(DENIED.values()):
        prog += [(JEQ_K, 0, 1, nr), (RET_K, 0, 0, eperm)]
    for nr in sorted(NOT_THERE.values()):
        prog += [(JEQ_K, 0, 1, nr), (RET_K, 0, 0, enosys)]
    prog += [(JEQ_K, 0, 1, CLONE3), (RET_K, 0, 0, enosys),
             # clone with a namespace flag
             (JEQ_K, 0, 4, CLONE),
             (LD_W_ABS, 0, 0, OFF_ARG0),
             (JSET_K, 0, 1, NAMESPACE_FLAGS),
             (RET_K, 0, 0, eperm),
             (RET_K, 0, 0, allow),
             # setsockopt(SOL_SOCKET, SO_LINGER)
             (JEQ_K, 0, 6, SETSOCKOPT),
             (LD_W_ABS, 0, 0, OFF_ARG1),
             (JEQ_K, 0, 3, SOL_SOCKET),
             (LD_W_ABS, 0, 0, OFF_ARG2),
             (JEQ_K, 0, 1, SO_LINGER),
             (RET_K, 0, 0, eperm),
             (RET_K, 0, 0, allow),
             # prctl(PR_SET_DUMPABLE, not 0)
             (JEQ_K, 0, 6, PRCTL),
             (LD_W_ABS, 0, 0, OFF_ARG0),
             (JEQ_K, 0, 3, PR_SET_DUMPABLE),
             (LD_W_ABS, 0, 0, OFF_ARG1),
             (JEQ_K, 1, 0, 0),
             (RET_K, 0, 0, eperm),
             (RET_K, 0, 0, allow),
             (RET_K, 0, 0, allow)]
    return prog


@functools.cache
def packed() -> bytes:
    """program() as the kernel reads it (struct sock_filter entries): installed here, and
    sent to a warm PHP, which installs it itself (sandbox/warm.py)."""
    return b"".join(struct.pack("=HBBI", *insn) for insn in program())


def install() -> None:
    """Needs no_new_privs first (or CAP_SYS_ADMIN); applies to this process and what it execs."""
    raw = packed()
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("@HP", len(raw) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fbuf), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
