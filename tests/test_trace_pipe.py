"""The master's read of a python worker's trace pipe is bounded (issue 36, attack 8): a
worker that floods it costs the master at most TRACE_MAX, then loses the pipe."""

from __future__ import annotations

import fcntl
import os
import threading

from tenantfpm.master.requests import TRACE_MAX, read_trace
from tenantfpm.master.worker import Worker

F_SETPIPE_SZ = 1031


def worker_with_trace(r: int) -> Worker:
    return Worker(pid=1, generation=1, started=0.0, max_requests=0, stdout=None, stderr=None,
                  errpipe=None, trace=r)


def test_a_dump_is_read_whole():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, b"Thread 0x1 (most recent call first):\n  File \"app.py\", line 3\n")
    wk = worker_with_trace(r)
    assert "app.py" in read_trace(wk) and wk.trace == r
    os.close(w)
    os.close(r)


def test_a_flood_is_cut_at_the_bound_and_the_pipe_taken_away():
    r, w = os.pipe()
    os.set_blocking(r, False)
    fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    stop = threading.Event()

    def flood() -> None:  # as fast as the pipe takes it, while the master reads
        chunk = b"x" * 65536
        try:
            while not stop.is_set():
                os.write(w, chunk)
        except OSError:
            pass

    os.write(w, b"y" * (TRACE_MAX + 65536))  # more than the bound already waiting
    t = threading.Thread(target=flood, daemon=True)
    t.start()
    wk = worker_with_trace(r)
    text = read_trace(wk)
    stop.set()
    assert len(text) == TRACE_MAX
    assert wk.trace is None  # closed: the writer now gets EPIPE, the master reads no more
    t.join(5)
    assert not t.is_alive()
    os.close(w)
