"""The seccomp filter, run through a classic-BPF interpreter on made-up syscalls."""

from __future__ import annotations

import errno
import struct

from tenantfpm.sandbox import seccomp

ALLOW = seccomp.SECCOMP_RET_ALLOW
EPERM = seccomp.SECCOMP_RET_ERRNO | errno.EPERM
I386 = 0x40000003


def run(nr: int, arg0: int = 0, arch: int = seccomp.AUDIT_ARCH_X86_64, arg1: int = 0,
        arg2: int = 0) -> int:
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, arg1, arg2, 0, 0, 0)
    prog, pc, acc = seccomp.program(), 0, 0
    for _ in range(1000):
        code, jt, jf, k = prog[pc]
        if code == seccomp.LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == seccomp.RET_K:
            return k
        else:
            hit = {seccomp.JEQ_K: acc == k, seccomp.JGE_K: acc >= k,
                   seccomp.JSET_K: bool(acc & k)}[code]
            pc += 1 + (jt if hit else jf)
    raise AssertionError("the program did not return")


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
    assert seccomp.FIRST_LOOKED_AT == seccomp.SETSOCKOPT == 54
    prog = seccomp.program()
    assert prog[6:8] == [(seccomp.JGE_K, 1, 0, 54), (seccomp.RET_K, 0, 0, ALLOW)]
    for nr in range(54):  # read ... getsockopt's neighbours: none of them is looked at
        assert run(nr) == ALLOW
