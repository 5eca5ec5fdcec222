"""What a zygote's spare worker must do, whichever zygote (and what a test holds as its
master): the PHP one (tests/test_sapi.py)
and the python one (tests/test_pyzygote.py) are driven through these same checks. A
zygote here has `proc`, `workers` (pid -> channel), `recv(timeout)` and `fork()`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tenantfpm.master.zygote import channel
from tests.procs import children_of


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def no_message(z: Any, within: float = 0.5) -> bool:
    with contextlib.suppress(TimeoutError):
        z.recv(timeout=within)
        return False
    return True


def spare_of(z: Any) -> int:
    """The zygote's one child that is not a worker."""
    spares = wait_for("the spare", lambda: children_of(z.proc.pid) - set(z.workers))
    assert len(spares) == 1, spares
    return spares.pop()


def killed_spare_is_never_reported_and_is_replaced(z: Any, serves: Callable[[], bool]) -> None:
    spare = spare_of(z)
    os.kill(spare, signal.SIGKILL)  # the tenant's code may do it: same user
    assert no_message(z)  # the master never heard of it
    assert spare_of(z) != spare
    # the spare dies while the zygote is not looking and an order waits: it is forked
    spare = spare_of(z)
    os.kill(z.proc.pid, signal.SIGSTOP)
    try:
        os.kill(spare, signal.SIGKILL)
        wait_for("the spare's end", lambda: Path(f"/proc/{spare}/stat").read_text()
                 .rsplit(")", 1)[1].split()[0] == "Z")
        t = threading.Timer(0.2, os.kill, (z.proc.pid, signal.SIGCONT))
        t.start()
        pid = z.fork()
        t.join()
    finally:
        os.kill(z.proc.pid, signal.SIGCONT)
    assert pid != spare
    assert serves()


def spares_that_keep_dying_are_given_up(z: Any, serves: Callable[[], bool],
                                        stderr: Callable[[], bytes]) -> None:
    """A spare that cannot live (killed at once, every time) must not cost a fork per
    look: after three in a row the zygote forks at each order again."""
    for _ in range(3):
        spare = spare_of(z)
        os.kill(spare, signal.SIGKILL)
        wait_for("its end", lambda: spare not in children_of(z.proc.pid))  # noqa: B023
    time.sleep(0.3)
    assert not children_of(z.proc.pid)
    pid = z.fork()
    assert serves()
    time.sleep(0.3)
    assert children_of(z.proc.pid) == {pid}
    assert b"forking at each order from now on" in stderr()  # the tenant's error.log


def the_next_order_goes_to_the_spare(z: Any, serves_as: Callable[[int], bool]) -> None:
    """The order's worker is the spare (no fork at the order), a worker as any other:
    it serves, its host pid answered; another spare is forked; its exit is reported."""
    spare = spare_of(z)
    pid = z.fork()
    assert pid == spare
    assert serves_as(pid)
    assert spare_of(z) != pid
    os.kill(pid, signal.SIGTERM)
    assert z.recv() == [f"exit {pid} 0"]
    del z.workers[pid]


def the_spare_ends_with_its_zygote(start: Callable[[str], Any],
                                   close_killed: Callable[[Any], None]) -> None:
    """Closed (the master's end of the channel): the zygote reaps its spare and exits 0.
    Killed, outside a PID namespace that would take the spare along: PR_SET_PDEATHSIG."""
    z = start("closed")
    spare = spare_of(z)
    z.close()
    assert z.proc.returncode == 0
    assert not Path(f"/proc/{spare}").exists()
    killed = start("killed")
    try:
        spare = spare_of(killed)
        killed.proc.kill()
        killed.proc.wait(timeout=20)
        wait_for("the spare's end", lambda: not Path(f"/proc/{spare}").exists())
    finally:
        close_killed(killed)


def master_ends(sock_path: str) -> tuple[socket.socket, socket.socket, socket.socket,
                                         int, int]:
    """What the master holds for a zygote it starts: the tenant's listener, its end of
    the control channel (blocking), the zygote's end (for fd 3), and a pipe for the
    zygote's stderr (read end, write end)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    ctl, theirs = channel()
    ctl.setblocking(True)
    stderr_r, stderr_w = os.pipe()
    return listener, ctl, theirs, stderr_r, stderr_w
