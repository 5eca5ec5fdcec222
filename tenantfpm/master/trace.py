"""The slow log's view of a python worker's stack, as faulthandler dumps it on TRACE_SIGNAL.

The master's reading of what the worker prints: the request runs under run_app() in
pyworker/wsgi.py, and what is above that frame is the app's.
"""

from __future__ import annotations

import re

TRACE_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')


def traceback_frames(dump: str, depth: int) -> list[str]:
    """The application's frames, innermost first, from a faulthandler dump, in slow.log's
    `function() file:line` form. Of all threads, the one serving the request is the one
    with the worker's run_app() on its stack; the worker's own frames are left out."""
    for block in re.split(r"^(?:Current thread|Thread) 0x[0-9a-f]+ .*\n", dump, flags=re.M):
        frames = [m.groups() for m in map(TRACE_FRAME.match, block.splitlines()) if m]
        cut = next((i for i, (path, _, func) in enumerate(frames)
                    if func == "run_app" and path.endswith("/pyworker/wsgi.py")), None)
        if cut is not None:
            return [f"{func}() {path}:{line}" for path, line, func in frames[:cut][:depth]]
    return []
