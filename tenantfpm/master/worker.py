"""One worker process as the master tracks it."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field

from tenantfpm.pyworker.scoreboard import Reader, Slot


@dataclass
class Worker:
    pid: int
    generation: int
    started: float
    max_requests: int
    stdout: int | None
    stderr: int | None
    errpipe: int
    wall_started: float = 0.0
    exe: str = ""  # what it execs: /proc/PID/exe once it has
    seen_idle: bool = False  # reached accept() at least once: the runtime started
    idle: bool = False
    last_activity: float = 0.0
    busy_since: float | None = None  # when the current request was first seen
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

    @property
    def starting(self) -> bool:
        return not self.seen_idle

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def exec_error(self) -> str:
        """What the child wrote before exec failed; empty if exec succeeded."""
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
