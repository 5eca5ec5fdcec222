"""Every format between the master and the processes it runs, defined once.

The master (Python) and the workers (Python's pyworker, the C SAPI in sapi/) speak
through a few formats: the descriptors a worker finds (fds.py), its scoreboard page
(scoreboard.py), the zygote's messages (zygote.py), the access.format codes
(accessformat.py), the warm PHP's order (order.py) and FastCGI (fastcgi.py). Each is
defined here, and sapi/wire.h is generated from these definitions (cheader.py; `make
wire`, and a test fails when it is stale), so the C side never restates a number.

Standard library only: the package is bound read-only into every sandbox, and the python
worker imports it in whatever interpreter the tenant picked.
"""
