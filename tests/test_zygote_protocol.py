"""The master's reading of what a zygote and its workers send: strict, bounded, and never
trusting a pid the kernel did not vouch for."""

import array
import os
import resource
import socket
import subprocess
import time

import pytest

from tenantfpm import fdguard
from tenantfpm.master.worker import Worker
from tenantfpm.master.zygote import MAX_MESSAGES, channel, gone, receive
from tenantfpm.wire.zygote import Message, parse


def test_parse_accepts_only_the_three_messages():
    assert parse(b"ready", 7) == Message("ready", sender=7)
    assert parse(b"hello 12", 4321) == Message("hello", 12, sender=4321)
    assert parse(b"exit 12 139", 7) == Message("exit", 12, 139, sender=7)
    for junk in (b"", b"hello", b"hello 0", b"hello -3", b"hello 99999999", b"hello 1 2",
                 b"exit 12", b"exit 12 70000", b"exit -1 0", b"ready ", b"READY",
                 b"hello 12\n", b"exit 1 2 3", "hello ١٢".encode()):
        assert parse(junk, 1) is None, junk


@pytest.mark.parametrize("fallback", [False, True], ids=["kernel", "fallback"])
def test_receive_gets_the_kernels_word_on_the_sender_and_never_keeps_smuggled_fds(
        fallback, monkeypatch):
    if fallback:
        monkeypatch.setenv(fdguard.FORCE_FALLBACK_ENV, "1")
    elif not fdguard.supported():
        pytest.skip("this kernel has no SO_PASSRIGHTS: the fallback is tested")
    ours, theirs = channel()
    try:
        theirs.send(b"hello 5")
        theirs.send(b"not a message")
        r, w = os.pipe()
        try:
            theirs.sendmsg([b"ready"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         array.array("i", [r]))])
            assert fallback, "the kernel took a descriptor for the master"
        except PermissionError:
            assert not fallback  # SO_PASSRIGHTS = 0: refused at the sender
            theirs.send(b"ready")
        os.close(r)
        msgs, closed = receive(ours)
        assert [m.kind for m in msgs] == ["hello", "junk", "ready"] and not closed
        assert all(m.sender == os.getpid() for m in msgs)  # SO_PASSCRED: from the kernel
        os.set_blocking(w, False)
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:  # closed by fdguard's disposer, off the loop
                os.write(w, b"x")
                time.sleep(0.01)
            raise AssertionError("the smuggled read end is still open in the master")
        except BrokenPipeError:
            pass  # nobody holds the read end any more
        finally:
            os.close(w)
    finally:
        theirs.close()
    msgs, closed = receive(ours)
    assert msgs == [] and closed
    ours.close()


def test_receive_reads_a_bounded_number_per_wakeup():
    ours, theirs = channel()
    try:
        for _ in range(MAX_MESSAGES + 10):
            theirs.send(b"ready")
        first, _ = receive(ours)
        second, _ = receive(ours)
        assert len(first) == MAX_MESSAGES and len(second) == 10
    finally:
        ours.close()
        theirs.close()


def test_gone_reads_a_pidfd_past_fd_setsize():
    """With a few hundred tenants the master's descriptors pass 1024: the check of an exit
    report must still work there (select() raised, and every later report was lost)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2100:
        pytest.skip("needs a descriptor limit above 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2100), hard))
    child = subprocess.Popen(["sleep", "30"])
    pidfd = os.pidfd_open(child.pid)
    high = os.dup2(pidfd, 2000)
    os.close(pidfd)
    w = Worker(pid=child.pid, generation=1, started=0.0, max_requests=0, stdout=-1,
               stderr=-1, errpipe=None, last_activity=0.0, wall_started=0.0, exe="")
    w.pidfd = high
    try:
        assert not gone(w)
        child.kill()
        child.wait()
        assert gone(w)
    finally:
        os.close(high)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
