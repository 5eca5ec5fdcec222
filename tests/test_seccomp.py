"""The seccomp filter, run through a classic-BPF interpreter on made-up syscalls."""

from __future__ import annotations

import errno
import socket
import struct

from tenantfpm.sandbox import seccomp

ALLOW = seccomp.SECCOMP_RET_ALLOW
EPERM = seccomp.SECCOMP_RET_ERRNO | errno.EPERM
I386 = 0x40000003


def steps(nr: int, arg0: int = 0, arch: int = seccomp.AUDIT_ARCH_X86_64, arg1: int = 0,
          arg2: int = 0, channel: bool = True) -> tuple[int, int]:
    """The filter's answer for one syscall, and how many instructions it took."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, arg1, arg2, 0, 0, 0)
    return _interpret(seccomp.program(channel), data, count=True)


def _interpret(prog, data: bytes, count: bool = False):
    pc, acc = 0, 0
    for n in range(1, 1000):
        code, jt, jf, k = prog[pc]
        if code == seccomp.LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == seccomp.RET_K:
            return (k, n) if count else k
        else:
            hit = {seccomp.JEQ_K: acc == k, seccomp.JGE_K: acc >= k,
                   seccomp.JSET_K: bool(acc & k)}[code]
            pc += 1 + (jt if hit else jf)
    raise AssertionError("the program did not return")


def run(nr: int, arg0: int = 0, arch: int = seccomp.AUDIT_ARCH_X86_64, arg1: int = 0,
        arg2: int = 0, channel: bool = True) -> int:
    return steps(nr, arg0, arch, arg1, arg2, channel)[0]


def test_everyday_syscalls_pass():
    for nr in (0, 1, 2, 9, 57, 59, 61, 62, 257):  # read write open mmap fork execve wait4 kill
        assert run(nr) == ALLOW


def test_every_denied_call_gets_eperm():
    for name, nr in seccomp.DENIED.items():
        assert run(nr) == EPERM, name


def test_clone_with_a_namespace_flag_is_refused_plain_clone_is_not():
    thread_flags = 0x003D0F00  # what glibc's pthread_create passes
    assert run(seccomp.CLONE, thread_flags) == ALLOW
    assert run(seccomp.CLONE, 0x01200011) == ALLOW  # fork()
    assert run(seccomp.CLONE, 0x10000000 | 0x11) == EPERM  # CLONE_NEWUSER
    assert run(seccomp.CLONE, 0x20000000) == EPERM  # CLONE_NEWPID
    assert run(seccomp.CLONE3) == seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS  # libc falls back


def test_other_abis_cannot_route_around_the_list():
    assert run(165, arch=I386) == EPERM  # even an innocent number
    assert run(seccomp.X32_SYSCALL_BIT | 165) == EPERM


def test_a_tenant_cannot_reach_its_siblings_descriptors_or_memory():
    enosys = seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS
    assert run(434) == enosys  # pidfd_open
    assert run(438) == enosys  # pidfd_getfd
    assert run(310) == EPERM and run(311) == EPERM  # process_vm_readv / writev


def test_a_tenant_cannot_make_a_socket_whose_close_blocks():
    assert run(seccomp.SETSOCKOPT, 3, arg1=1, arg2=13) == EPERM  # SO_LINGER
    assert run(seccomp.SETSOCKOPT, 3, arg1=1, arg2=2) == ALLOW  # SO_REUSEADDR
    assert run(seccomp.SETSOCKOPT, 3, arg1=6, arg2=13) == ALLOW  # IPPROTO_TCP, TCP_FASTOPEN...
    assert run(seccomp.SETSOCKOPT, 3, arg1=6, arg2=1) == ALLOW  # TCP_NODELAY


def test_a_process_made_non_dumpable_stays_so():
    assert run(seccomp.PRCTL, seccomp.PR_SET_DUMPABLE, arg1=0) == ALLOW
    assert run(seccomp.PRCTL, seccomp.PR_SET_DUMPABLE, arg1=1) == EPERM
    assert run(seccomp.PRCTL, 15, arg1=1) == ALLOW  # PR_SET_NAME
    assert run(seccomp.PRCTL, 3) == ALLOW  # PR_GET_DUMPABLE


def test_the_hot_syscalls_leave_the_filter_first():
    for nr in (0, 1, 2):  # read, write, open: the first compare after the ABI checks
        assert steps(nr) == (ALLOW, 6)
    for nr in (7, 9, 20):  # poll, mmap, writev: after close's
        assert steps(nr)[1] <= 12
    assert steps(seccomp.CLOSE, 5)[1] <= 13
    for nr in range(4, 33):  # nothing between close and dup2 is looked at
        assert run(nr, 3) == ALLOW


def test_the_program_fits_the_kernels_jumps():
    for channel in (True, False):
        prog = seccomp.program(channel)
        assert len(prog) < 4096
        assert all(0 <= jt < 256 and 0 <= jf < 256 for _c, jt, jf, _k in prog)
        assert prog[-1] == (seccomp.RET_K, 0, 0, ALLOW)


ENOSYS = seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS


def test_descriptors_pass_on_the_channel_only():
    ch = seccomp.CHANNEL_FD
    for nr in (seccomp.SENDMSG, seccomp.RECVMSG, seccomp.RECVMMSG, seccomp.SENDMMSG):
        assert run(nr, ch) == ALLOW
        assert run(nr, ch + 1) == EPERM
        assert run(nr, 0) == EPERM
        assert run(nr, ch | 1 << 32) == ALLOW  # the kernel reads an int: still fd 3
        assert run(nr, ch, channel=False) == EPERM  # a process with no channel: nowhere
    assert run(45, 7) == ALLOW  # recvfrom: no descriptors come that way
    assert run(44, 7) == ALLOW  # sendto: nor go


def test_the_channel_cannot_be_replaced_or_freed():
    ch = seccomp.CHANNEL_FD
    assert run(seccomp.CLOSE, ch) == EPERM
    assert run(seccomp.CLOSE, ch + 1) == ALLOW
    assert run(seccomp.DUP2, 7, arg1=ch) == EPERM
    assert run(seccomp.DUP3, 7, arg1=ch) == EPERM
    assert run(seccomp.DUP2, ch, arg1=9) == ALLOW  # a copy elsewhere receives nothing
    assert run(seccomp.DUP3, 5, arg1=9) == ALLOW
    assert run(seccomp.CLOSE_RANGE, 0, arg1=1000) == ENOSYS  # python closes one by one
    assert run(seccomp.CLOSE_RANGE, ch, arg1=1 << 31) == ENOSYS
    # glibc's closefrom() would loop for ever on ENOSYS: told it is done (errno 0)
    assert run(seccomp.CLOSE_RANGE, ch, arg1=0xFFFFFFFF) == seccomp.SECCOMP_RET_ERRNO
    assert run(seccomp.CLOSE_RANGE, ch + 1) == ALLOW
    # close-on-exec would free the number at the next exec
    assert run(seccomp.FCNTL, ch, arg1=seccomp.F_SETFD) == EPERM
    assert run(seccomp.FCNTL, ch, arg1=1) == ALLOW  # F_GETFD
    assert run(seccomp.FCNTL, 7, arg1=seccomp.F_SETFD) == ALLOW
    assert run(seccomp.FCNTL, ch, arg1=1030) == ALLOW  # F_DUPFD_CLOEXEC: a copy
    assert run(seccomp.IOCTL, ch, arg1=seccomp.FIOCLEX) == EPERM
    assert run(seccomp.IOCTL, 7, arg1=seccomp.FIOCLEX) == ALLOW
    assert run(seccomp.IOCTL, ch, arg1=0x541B) == ALLOW  # FIONREAD
    # a process without a channel keeps all of these
    for nr, a0, a1 in ((seccomp.CLOSE, ch, 0), (seccomp.DUP2, 7, ch), (seccomp.CLOSE_RANGE, 0, 9),
                       (seccomp.FCNTL, ch, seccomp.F_SETFD)):
        assert run(nr, a0, arg1=a1, channel=False) == ALLOW


def test_a_tenant_behind_tcp_keeps_sendmsg_and_recvmsg():
    """Its web server's connections carry no descriptors: nothing to forward, nothing to
    pin."""
    for channel in (True, False):
        prog = seccomp.program(channel, unix_listener=False)
        for nr, a0, a1 in ((seccomp.RECVMSG, 7, 0), (seccomp.RECVMMSG, 9, 0),
                           (seccomp.SENDMSG, 7, 0), (seccomp.SENDMMSG, 9, 0),
                           (seccomp.CLOSE, seccomp.CHANNEL_FD, 0),
                           (seccomp.DUP2, 7, seccomp.CHANNEL_FD)):
            data = struct.pack("<iIQ6Q", nr, seccomp.AUDIT_ARCH_X86_64, 0, a0, a1, 0, 0, 0, 0)
            assert _interpret(prog, data) == ALLOW
        # the rest of the filter holds as ever
        data = struct.pack("<iIQ6Q", seccomp.SETSOCKOPT, seccomp.AUDIT_ARCH_X86_64, 0, 3, 1, 13,
                           0, 0, 0)
        assert _interpret(prog, data) == EPERM


def test_the_listener_is_told_by_its_family(tmp_path):
    tcp = socket.socket()
    unix = socket.socket(socket.AF_UNIX)
    try:
        assert not seccomp.listens_on_unix(tcp.fileno())
        assert seccomp.listens_on_unix(unix.fileno())
        assert seccomp.listens_on_unix(-1)  # cannot tell: the strict answer
        with open(tmp_path / "f", "w") as f:
            assert seccomp.listens_on_unix(f.fileno())
    finally:
        tcp.close()
        unix.close()
