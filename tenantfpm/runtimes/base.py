"""The Runtime interface: everything the master needs to know of what a worker runs.

One class per `[runtime] type`, so the master (pool.py, status.py, cli.py, the
sandbox) asks the tenant's runtime instead of branching on its type: what to
exec, what to write before the first spawn, what it must see in its sandbox,
which extra descriptors a worker gets, whether it reports its own requests, how
its current request is read, and how a web server reaches it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
from dataclasses import dataclass

from tenantfpm.config.tenant import Tenant
from tenantfpm.inspect import PhpState, Unavailable
from tenantfpm.sandbox.spawn import WarmStart
from tenantfpm.wire.scoreboard import Reader

F_SETPIPE_SZ = 1031
ACCESS_PIPE_SIZE = 1 << 20


@dataclass
class Channels:
    """Descriptors a worker gets besides its socket and stdio (as fds 3, 4, 5...), and the
    master's own ends of them."""

    pass_fds: tuple[int, ...] = ()
    worker_ends: tuple[int, ...] = ()  # closed by the master once the worker has its copies
    board: Reader | None = None  # the worker's scoreboard, as the master reads it
    trace: int | None = None  # the read end of the worker's slow-log trace pipe
    access: int | None = None  # the read end of its access-line pipe

    def with_access_log(self, tenant: Tenant) -> Channels:
        """A pipe for access.log's lines as the next fd when the tenant keeps one: the
        worker writes its lines there, the master writes them to access.log (stdio.py).
        Never the log itself: any process of the tenant can take a descriptor its worker
        holds."""
        if tenant.site.log.access:
            r, w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(r, False)  # the master's end only: the worker's write waits
            # room for what comes while the master's read rests (stdio.ACCESS_BATCH);
            # pages are taken only as lines wait in it
            with contextlib.suppress(OSError):
                fcntl.fcntl(r, F_SETPIPE_SZ, ACCESS_PIPE_SIZE)
            self.pass_fds += (w,)
            self.worker_ends += (w,)
            self.access = r
        return self

    def close_worker_ends(self) -> None:
        """Once: a descriptor number closed twice may by then be someone else's."""
        for fd in self.worker_ends:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.worker_ends = ()

    def close(self) -> None:
        """The spawn failed: nothing of it stays open."""
        self.close_worker_ends()
        for fd in (self.trace, self.access):
            if fd is not None:
                os.close(fd)
        self.trace = self.access = None
        if self.board is not None:
            self.board.close()
            self.board = None


class Runtime:
    type = ""
    # the worker publishes a scoreboard (accepted conn, per-request figures, access.log);
    # others are observed from /proc and their memory
    reports_requests = False
    # workers are forked by a per-tenant zygote (master/zygote.py), not spawned one by one
    zygote = False

    def prepare(self, tenant: Tenant) -> None:
        """Files the workers need, written before the first spawn of a start or reload."""

    def command(self, tenant: Tenant, max_requests: int) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def zygote_command(self, tenant: Tenant) -> tuple[list[str], dict[str, str]]:
        """What the zygote execs (runtimes with `zygote`)."""
        raise NotImplementedError

    def warm_start(self, tenant: Tenant) -> WarmStart | None:
        """What a warm process for this tenant's zygote execs (sandbox/spawner.py); None: its
        zygote always execs itself."""
        return None

    def ini_source(self, tenant: Tenant) -> str | None:
        """A generated php.ini to show the worker at /etc/tenantfpm/php.ini, if any."""
        return None

    def binds(self, tenant: Tenant) -> list[tuple[str, str, bool]]:
        """What the sandbox must show besides the tenant's own binds: (source, target, ro)."""
        return []

    def channels(self, tenant: Tenant) -> Channels:
        """The extra descriptors one new worker gets."""
        return Channels()

    def inspect(self, pid: int, exe: str, depth: int) -> PhpState:
        """A busy worker's request (and `depth` stack frames), read from outside it."""
        raise Unavailable(f"{self.type} workers cannot be read from outside")

    def nginx_locations(self, tenant: Tenant) -> str:
        """The locations of the tenant's nginx server block (nginx.py wraps them): files
        as they are, a path that is none to the front controller (index.php, as WordPress
        and most frameworks want), and scripts that exist to the tenant's socket."""
        return ("location / {\n    try_files $uri $uri/ /index.php$is_args$args;\n}\n\n"
                + nginx_location(tenant, "~ [^/]\\.php(/|$)",
                                 "fastcgi_split_path_info ^(.+?\\.php)(/.*)$",
                                 "try_files $fastcgi_script_name =404",
                                 # try_files empties $fastcgi_path_info (nginx ticket 321)
                                 "set $path_info $fastcgi_path_info",
                                 "fastcgi_param SCRIPT_FILENAME "
                                 "$document_root$fastcgi_script_name",
                                 "fastcgi_param PATH_INFO $path_info"))


def worker_env(tenant: Tenant) -> dict[str, str]:
    """The tenant's `[env]`, plus USER and HOME as FPM sets them for a pool's workers
    (the tenant's user; its home, which in the sandbox is the tenant's root, the home
    its /etc/passwd names) unless `[env]` says otherwise."""
    env = dict(tenant.site.env)
    env.setdefault("USER", tenant.site.user)
    env.setdefault("HOME", home(tenant))
    return env


def home(tenant: Tenant) -> str:
    if tenant.site.isolation.enabled:
        return tenant.site.root
    try:
        return pwd.getpwnam(tenant.site.user).pw_dir
    except KeyError:
        return "/"


def nginx_location(tenant: Tenant, match: str, *directives: str) -> str:
    """`location MATCH { ... }` passing to the tenant's socket with nginx's fastcgi_params;
    `directives` go around the fastcgi_pass the way the runtime needs them."""
    before = [d for d in directives if not d.startswith("fastcgi_param")]
    after = [d for d in directives if d.startswith("fastcgi_param")]
    body = [*before, f"fastcgi_pass {fastcgi_target(tenant)}", "include fastcgi_params", *after]
    return f"location {match} {{\n" + "".join(f"    {d};\n" for d in body) + "}"


def fastcgi_target(tenant: Tenant) -> str:
    return f"unix:{tenant.listen.path}" if tenant.listen.is_unix else str(tenant.listen)
