"""The spawn server (tenantfpm/sandbox/spawner.py) driven as the master drives it: real
processes, started by a real server, waited for by this process as their parent."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time

import pytest

from tenantfpm.sandbox import rootfs, spawn, spawner


@pytest.fixture
def server():
    logs: list[tuple[str, str]] = []
    srv = spawner.Server.start(lambda level, message: logs.append((level, message)))
    assert srv is not None
    srv.logs = logs
    spawn.server = srv
    yield srv
    spawn.server = None
    srv.close()
    if not getattr(srv, "reaped", False):  # it is this process's child: ours to reap
        assert os.waitpid(srv.pid, 0)[0] == srv.pid


def _plan(*argv: str) -> spawn.Plan:
    return spawn.Plan(argv=list(argv), env={"PATH": "/usr/bin:/bin"}, cwd="/", uid=65534,
                      gid=65534, listen_fd=0)


def _run(plan: spawn.Plan) -> tuple[int, bytes, bytes]:
    """Spawn, wait as the parent; (wait status, stdout, the failed step if any)."""
    child = spawn.spawn(plan)
    _pid, status = os.waitpid(child.pid, 0)
    outputs = []
    for fd in (child.stdout, child.errpipe):
        os.set_blocking(fd, True)
        outputs.append(os.read(fd, 4096))
    for fd in (child.stdout, child.stderr, child.errpipe):
        os.close(fd)
    return status, outputs[0], outputs[1]


def test_the_servers_children_are_the_callers_with_their_identity(server):
    status, out, failed = _run(_plan("/bin/sh", "-c", 'echo "$PPID $(id -u) $$"'))
    ppid, uid, pid = out.split()
    assert status == 0 and failed == b""
    assert int(ppid) == os.getpid() != server.pid  # CLONE_PARENT: ours, not the server's
    assert int(uid) == 65534 and int(pid) not in (os.getpid(), server.pid)


def test_a_failed_step_is_reported_as_before(server):
    status, _out, failed = _run(_plan("/nonexistent/program"))
    assert os.waitstatus_to_exitcode(status) == 127
    assert failed == b"exec: No such file or directory: /nonexistent/program"


def test_passed_descriptors_arrive_in_order_and_nothing_else(server):
    """Nothing of the server's (its channel to the master) reaches the child."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    plan = spawn.Plan(argv=["/bin/sh", "-c", "echo first >&3; echo second >&4; "
                                             "ls /proc/$$/fd"],
                      env={"PATH": "/usr/bin:/bin"}, cwd="/", uid=65534, gid=65534,
                      listen_fd=0, pass_fds=(a_w, b_w))
    status, out, failed = _run(plan)
    os.close(a_w)
    os.close(b_w)
    assert status == 0 and failed == b""
    assert sorted(int(fd) for fd in out.split()) == [0, 1, 2, 3, 4]
    assert os.read(a_r, 100) == b"first\n" and os.read(b_r, 100) == b"second\n"
    os.close(a_r)
    os.close(b_r)


def test_a_dead_server_leaves_the_caller_forking_by_itself(server):
    signal.pidfd_send_signal(server.pidfd, signal.SIGKILL)
    os.waitpid(server.pid, 0)
    status, out, _failed = _run(_plan("/bin/sh", "-c", "echo $PPID"))
    assert status == 0 and int(out) == os.getpid()
    assert [level for level, _m in server.logs] == ["warning"]
    assert "forks its processes itself" in server.logs[0][1]
    status, _out, _failed = _run(_plan("/bin/true"))  # and goes on doing so, quietly
    assert status == 0 and len(server.logs) == 1
    server.reaped = True


def test_the_server_ends_when_its_channel_closes():
    srv = spawner.Server.start(lambda level, message: None)
    assert srv is not None
    srv.sock.close()  # as a master that ended: no kill, the server sees the end
    deadline = time.monotonic() + 10
    while os.waitpid(srv.pid, os.WNOHANG) == (0, 0):
        assert time.monotonic() < deadline, "the spawn server outlived its channel"
        time.sleep(0.02)
    os.close(srv.pidfd)


def test_a_plan_too_large_for_one_message_is_forked_by_the_caller(server):
    plan = spawn.Plan(argv=["/bin/sh", "-c", 'echo "$PPID ${#BIG}"'],
                      env={"PATH": "/bin", "BIG": "x" * (spawner.MAX_PLAN + 1)}, cwd="/",
                      uid=65534, gid=65534, listen_fd=0)
    status, out, _failed = _run(plan)
    assert status == 0 and out.split() == [str(os.getpid()).encode(),
                                           str(spawner.MAX_PLAN + 1).encode()]
    assert server.logs == []  # the server stays in use
    assert _run(_plan("/bin/true"))[0] == 0


# --- the warm PHP's keeping (its processes themselves: tests/integration/test_warm.py) ---

def _warm_plan(start: spawn.WarmStart | None) -> spawn.Plan:
    spec = rootfs.RootSpec(new_root="/r", tenant_root="/srv/a", user="a", uid=1, gid=1,
                           group="a")
    return spawn.Plan(argv=["/usr/bin/php-cgi8.2"], env={}, cwd="/", uid=1, gid=1,
                      listen_fd=0, warm=start,
                      sandbox=spawn.Sandbox(hostname="a", root=spec, steps=[]))


def test_only_sandboxed_plans_of_a_warm_kind_are_given_to_a_warm_process():
    start = spawn.WarmStart("/usr/bin/php-cgi8.2")
    plan = _warm_plan(start)
    assert spawner.WarmKeeper(True).wanted(plan)
    assert not spawner.WarmKeeper(False).wanted(plan)
    assert not spawner.WarmKeeper(True).wanted(_warm_plan(None))
    no_pid_ns = dataclasses.replace(plan, sandbox=dataclasses.replace(
        plan.sandbox, pid_namespace=False))
    assert not spawner.WarmKeeper(True).wanted(no_pid_ns)


def test_a_ready_warm_process_is_taken_once_and_only_for_its_kind():
    start = spawn.WarmStart("/usr/bin/php-cgi8.2")
    keeper = spawner.WarmKeeper(True)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    keeper.current = spawner.Warm(start, 4242, ours)
    assert keeper.take(_warm_plan(start)) is None  # not ready yet: the plan is cloned
    assert keeper.current is not None and keeper.failures == 0
    theirs.send(b"ready")
    assert keeper.take(_warm_plan(spawn.WarmStart("/usr/bin/other"))) is None
    warm = keeper.current
    assert keeper.take(_warm_plan(start)) is warm and keeper.current is None
    assert keeper.take(_warm_plan(start)) is None  # taken: the next one is refill()'s
    theirs.close()
    ours.close()


def test_warm_processes_that_keep_dying_stop_being_made(monkeypatch, capsys):
    """Each one here ends at once (its clone is pretended): after WARM_FAILURES_MAX in a
    row the server clones no more of them, and says so once."""
    clones: list[int] = []
    monkeypatch.setattr(spawner, "clone", lambda flags: clones.append(flags) or 999999)
    start = spawn.WarmStart("/usr/bin/php-cgi8.2")
    keeper = spawner.WarmKeeper(True)
    for _ in range(spawner.WARM_FAILURES_MAX + 3):
        assert keeper.take(_warm_plan(start)) is None
        keeper.refill(start)
    assert len(clones) == spawner.WARM_FAILURES_MAX
    assert capsys.readouterr().err.count("none from now on") == 1
    keeper.drop()
