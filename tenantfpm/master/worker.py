"""One worker process as the master tracks it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import dataclass, field

from tenantfpm.wire.scoreboard import Reader, Slot


@dataclass
class Worker:
    pid: int
    generation: int
    started: float
    max_requests: int
    stdout: int | None
    stderr: int | None
    errpipe: int | None  # exec errors of a worker the master spawned itself
    wall_started: float = 0.0
    exe: str = ""  # what it execs: /proc/PID/exe once it has
    seen_idle: bool = False  # reached accept() at least once: the runtime started
    idle: bool = False
    last_activity: float = 0.0
    busy_since: float | None = None  # when the current request was first seen
    board_claim: float | None = None  # the start its scoreboard gave at the last look
    conn: str | None = None  # the connection being served at the last look
    slow_logged: bool = False  # this request already has its slow.log entry
    activity: int = -1
    rss: int | None = None
    cpu_seconds: float | None = None
    retiring: str | None = None  # why the master asked it to go
    kill_at: float | None = None  # escalate to SIGKILL after this
    partial: dict[str, bytes] = field(default_factory=dict)
    last_output: str = ""
    # python workers only: their scoreboard, its last reading, the slow-log trace pipe
    board: Reader | None = None
    slot: Slot | None = None
    trace: int | None = None
    access: int | None = None  # the read end of its access-line pipe (stdio.Output)
    # forked by a zygote: its pid in the tenant's namespace, a pidfd for signals
    ns_pid: int | None = None
    pidfd: int | None = None
    hello: socket.socket | None = None  # its own channel until it said hello

    @property
    def starting(self) -> bool:
        return not self.seen_idle

    def signal(self, sig: int) -> None:
        """Through the pidfd when there is one: a zygote's worker is not the master's
        child, so its pid could be recycled before the master hears of its exit."""
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, sig)
        elif self.pid > 0:  # a fork ordered but not yet reported has no pid (<= 0)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def exec_error(self) -> str:
        """What the child wrote before exec failed; empty if exec succeeded."""
        if self.errpipe is None:
            return ""
        try:
            return os.read(self.errpipe, 512).decode(errors="replace")
        except BlockingIOError:
            return ""
        except OSError:
            return ""


def describe_exit(status: int) -> tuple[str, int | None, int | None]:
    """Human text, exit code, signal number of a waitpid() status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"exited on signal {sig} ({name}){core}", None, sig
    code = os.WEXITSTATUS(status)
    return f"exited with code {code}", code, None
