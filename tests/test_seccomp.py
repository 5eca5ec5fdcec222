"""The seccomp filter, run through a classic-BPF interpreter on made-up syscalls."""

from __future__ import annotations

import errno
import struct

from tenantfpm.sandbox import seccomp

ALLOW = seccomp.SECCOMP_RET_ALLOW
EPERM = seccomp.SECCOMP_RET_ERRNO | errno.EPERM
I386 = 0x40000003


def run(nr: int, arg0: int = 0, arch: int = seccomp.AUDIT_ARCH_X86_64) -> int:
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
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
