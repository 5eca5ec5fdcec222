"""The python runtime's worker: runs inside the sandbox, in the tenant's own interpreter.

Only the standard library and tenantfpm.wire are imported here, so that any Python >=
3.11 the tenant picks (a virtualenv's included) can run it. The master binds the
tenantfpm package read-only into the sandbox (wire.fds.LIB_DIR) and imports nothing
from here.
"""
