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
socket a tenant makes can block a close. Nor can one come in from outside, nor any go out
but to the master: descriptors are passed on the channel to the master only
(passing_rules), so none reaches the web server over a FastCGI connection.
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
import socket
import struct

from tenantfpm.wire import fds

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
# passing descriptors, and what could put another socket where the channel is
CLOSE, IOCTL, DUP2, SENDMSG, RECVMSG, FCNTL = 3, 16, 33, 46, 47, 72
DUP3, RECVMMSG, SENDMMSG, CLOSE_RANGE = 292, 299, 307, 436
F_SETFD, FIOCLEX = 2, 0x5451
CHANNEL_FD = fds.CHANNEL_FD  # the first descriptor a plan passes: a zygote's channel

Insn = tuple[int, int, int, int]

_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]

EPERM = SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = SECCOMP_RET_ERRNO | errno.ENOSYS
ALLOW = SECCOMP_RET_ALLOW


def _if_arg(off: int, value: int, then: int, otherwise: int) -> list[Insn]:
    """Load an int argument; return `then` if it equals `value`, else `otherwise`."""
    return [(LD_W_ABS, 0, 0, off), (JEQ_K, 0, 1, value), (RET_K, 0, 0, then),
            (RET_K, 0, 0, otherwise)]


def _on_channel(cmd_off: int, cmd: int) -> list[Insn]:
    """fcntl/ioctl: `cmd` refused on the channel only."""
    return [(LD_W_ABS, 0, 0, OFF_ARG0), (JEQ_K, 0, 4, CHANNEL_FD),
            *_if_arg(cmd_off, cmd, EPERM, ALLOW), (RET_K, 0, 0, ALLOW)]


def passing_rules(channel: bool) -> dict[int, list[Insn]]:
    """Where a sandboxed process may pass descriptors (sendmsg/sendmmsg and
    recvmsg/recvmmsg, the only calls that carry SCM_RIGHTS; io_uring is denied):
    nowhere, or only on fd 3, its channel to the master, which guards what it reads
    (fdguard.py) and which then stays that socket for the process's life: not closed, not
    replaced (dup2/dup3 onto it, close_range over it), not made close-on-exec (so exec
    cannot free the number). So nothing a tenant sends reaches the web server over its
    FastCGI connection (nginx drops what it is sent, and a dropped socket whose close
    blocks freezes its worker), and nothing made outside the sandbox (a local user's
    socket, passed over a unix socket in a shared directory or the abstract namespace)
    comes in to be forwarded (docs/security.md). The price: glibc's resolver sends its A
    and AAAA queries together with sendmmsg, so the sandbox's resolv.conf asks for one at
    a time (rootfs.resolver_steps)."""
    if not channel:
        return {nr: [(RET_K, 0, 0, EPERM)] for nr in (SENDMSG, RECVMSG, RECVMMSG, SENDMMSG)}
    only_channel = _if_arg(OFF_ARG0, CHANNEL_FD, ALLOW, EPERM)
    return {
        CLOSE: _if_arg(OFF_ARG0, CHANNEL_FD, EPERM, ALLOW),
        IOCTL: _on_channel(OFF_ARG1, FIOCLEX),
        DUP2: _if_arg(OFF_ARG1, CHANNEL_FD, EPERM, ALLOW),
        SENDMSG: only_channel,
        RECVMSG: only_channel,
        FCNTL: _on_channel(OFF_ARG1, F_SETFD),
        DUP3: _if_arg(OFF_ARG1, CHANNEL_FD, EPERM, ALLOW),
        RECVMMSG: only_channel,
        SENDMMSG: only_channel,
        # a first descriptor above the channel is fine. Else ENOSYS: python falls back
        # to closing one by one, and close() spares the channel; but glibc's closefrom()
        # (close_range up to ~0U) would then loop for ever over a descriptor it cannot
        # close, so that one is told it is done, and closes nothing
        CLOSE_RANGE: [(LD_W_ABS, 0, 0, OFF_ARG0), (JGE_K, 0, 1, CHANNEL_FD + 1),
                      (RET_K, 0, 0, ALLOW),
                      (LD_W_ABS, 0, 0, OFF_ARG1), (JEQ_K, 0, 1, 0xFFFFFFFF),
                      (RET_K, 0, 0, SECCOMP_RET_ERRNO), (RET_K, 0, 0, ENOSYS)],
    }


def rules(channel: bool, unix_listener: bool = True) -> dict[int, list[Insn]]:
    """Each syscall looked at, and the instructions that decide it (each path ends in a
    return). Every other syscall is allowed. A tenant whose web server connects over TCP
    (`unix_listener` false) keeps recvmsg everywhere: those connections carry no
    descriptors to forward."""
    out: dict[int, list[Insn]] = {nr: [(RET_K, 0, 0, EPERM)] for nr in DENIED.values()}
    out.update({nr: [(RET_K, 0, 0, ENOSYS)] for nr in NOT_THERE.values()})
    out[CLONE3] = [(RET_K, 0, 0, ENOSYS)]
    out[CLONE] = [(LD_W_ABS, 0, 0, OFF_ARG0), (JSET_K, 0, 1, NAMESPACE_FLAGS),
                  (RET_K, 0, 0, EPERM), (RET_K, 0, 0, ALLOW)]
    out[SETSOCKOPT] = [(LD_W_ABS, 0, 0, OFF_ARG1), (JEQ_K, 0, 4, SOL_SOCKET),
                       *_if_arg(OFF_ARG2, SO_LINGER, EPERM, ALLOW), (RET_K, 0, 0, ALLOW)]
    out[PRCTL] = [(LD_W_ABS, 0, 0, OFF_ARG0), (JEQ_K, 0, 4, PR_SET_DUMPABLE),
                  *_if_arg(OFF_ARG1, 0, ALLOW, EPERM), (RET_K, 0, 0, ALLOW)]
    if unix_listener:
        out.update(passing_rules(channel))
    return out


def listens_on_unix(fd: int) -> bool:
    """Whether the listening socket `fd` is a unix one (or cannot be told: the strict
    answer)."""
    try:
        s = socket.socket(fileno=fd)
    except (OSError, ValueError):
        return True
    try:
        return s.family not in (socket.AF_INET, socket.AF_INET6)
    finally:
        s.detach()


def program(channel: bool = True, unix_listener: bool = True) -> list[Insn]:
    """`channel`: the process has its channel to the master on fd 3; `unix_listener`: its
    web server connects over a unix socket (passing_rules)."""
    prog: list[Insn] = [
        (LD_W_ABS, 0, 0, OFF_ARCH),
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, EPERM),  # another ABI
        (LD_W_ABS, 0, 0, OFF_NR),
        (JGE_K, 0, 1, X32_SYSCALL_BIT),
        (RET_K, 0, 0, EPERM),  # x32
    ]
    # ascending: whatever lies below the next number looked at leaves at once, so read,
    # write and open leave after one compare, poll, mmap, writev... after a few
    for nr, decide in sorted(rules(channel, unix_listener).items()):
        prog += [(JGE_K, 1, 0, nr), (RET_K, 0, 0, ALLOW),
                 (JEQ_K, 0, len(decide), nr), *decide]
    prog.append((RET_K, 0, 0, ALLOW))
    return prog


@functools.cache
def packed(channel: bool = True, unix_listener: bool = True) -> bytes:
    """program() as the kernel reads it (struct sock_filter entries): installed here, and
    sent to a warm PHP, which installs it itself (sandbox/warm.py)."""
    return b"".join(struct.pack("=HBBI", *insn) for insn in program(channel, unix_listener))


def install(channel: bool, unix_listener: bool = True) -> None:
    """Needs no_new_privs first (or CAP_SYS_ADMIN); applies to this process and what it execs."""
    raw = packed(channel, unix_listener)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("@HP", len(raw) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fbuf), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
