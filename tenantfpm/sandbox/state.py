"""What a tenant stores that must outlive its workers, its /tmp and the master: its PHP
sessions, on disk under `<state_dir>/tenants/<name>/`.

The tenant's /tmp is a tmpfs that goes with a master restart or a remove+add; logged-in
visitors should not. The directory chain down to `<name>` is root's (verified, made with
no link followed); `sessions` inside it is the tenant user's alone (0700), so no other
tenant, nor the web server, reads a session. The master never opens anything in it:
PHP writes and collects the files itself (runtimes/php_cgi.py sets session.save_path and
session.gc_probability). `remove` keeps it, as it keeps the logs.
"""

from __future__ import annotations

import contextlib
import os
import stat

from tenantfpm import safefs
from tenantfpm.config.tenant import Tenant

SESSIONS = "sessions"
# where Debian's PHP keeps them, and where the sandbox shows the tenant's own
SESSIONS_INSIDE = "/var/lib/php/sessions"


def prepare_sessions(tenant: Tenant) -> str:
    """The tenant's session directory on the host, made if missing; its host path."""
    base = tenant.state_dir
    dfd = safefs.open_trusted_dir(base, create_mode=0o755)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(SESSIONS, 0o700, dir_fd=dfd)
        fd = os.open(SESSIONS, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dfd)
        try:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (tenant.uid, tenant.gid):
                os.fchown(fd, tenant.uid, tenant.gid)  # made now, or the tenant's user changed
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
    return os.path.join(base, SESSIONS)
