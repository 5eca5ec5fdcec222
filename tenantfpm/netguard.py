"""Tenants cannot connect to any tenant's TCP listener, nor to the metrics or status
endpoints: enforced by the kernel (nftables), whatever a tenant's code does.

With `network = "host"` a tenant shares the host's loopback, and a FastCGI
listener trusts whoever connects: a tenant that reaches another's listener runs
that tenant's scripts as that tenant (PHP-FPM has the same hole, php-src #15499).
allowed_clients cannot help (the attacker connects from 127.0.0.1 too); only
the socket's owner tells them apart. So the master keeps one nftables table:

- output, on loopback: a connection attempt (SYN without ACK) from a socket
  owned by any tenant's uid to any protected port is answered with a reset;
  answers on connections already made (a worker replying to nginx) are not
  SYNs and pass, so no connection tracking is needed;
- input, from the veth of an `isolated` tenant (`tf*`): the same ports refused;
- output, on loopback: a connection attempt to the master's own TCP endpoints
  (metrics_listen, status_listen) from any socket but root's or the monitoring
  group's (`status_listen_group`, as Prometheus' user has it), so a local account of
  no tenant (www-data, a shell user) does not read every tenant's running URIs.

A tenant's unix socket is out of reach already: run_dir is not in its view, and
check refuses socket modes open to every user and tenants in the socket's group.
The rule tests the cheap things first (loopback, a SYN, then the port set, then
the uid set), so most packets leave it after a compare or two; measured with
bench/firewall_cost.py, see docs/performance.md.

nftables looks every uid it is given up as a user name before it takes it for a
number, and glibc reads /etc/passwd from the top for each: with 10,000 users, the
whole table took 6 s of the master's start. So the whole table goes in through the
`nft` command in a mount namespace of its own, where /etc/passwd and
/etc/nsswitch.conf are empty: every lookup fails at once and each uid is the number
it is (0.2 s). That changes no meaning: config refuses a tenant whose uid is another
user's name (config/rules.py). Changes in place carry a uid or two and stay in the
master.

The changes go in through libnftables, the library the `nft` command is made of:
running the command cost 5 ms of every `add` (a fork and an exec), the library
0.2-0.4 ms. libnftables waits on its netlink socket with select(), and glibc
aborts a process that select()s on a descriptor past FD_SETSIZE: a master with
a thousand tenants has every number below it taken by their sockets (the bench
found it so). So the master holds one low descriptor from its start, while it
has few open, and frees it for the library's socket only around each call.
Without one, the `nft` command does the work.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess

from tenantfpm.errors import TenantFPMError

LIBRARY = "libnftables.so.1"  # Debian's libnftables1, which the nftables package needs
FD_SETSIZE = 1024  # select()'s limit, which libnftables' netlink socket must stay under
TIMEOUT = 10.0  # for the nft command


def table_name(cgroup_parent: str, control_socket: str) -> str:
    """One table per master, named so two never collide: by its cgroup parent and its
    control socket (no two masters share one), so a second master on a host (a test, a
    package test) never replaces or removes another's table."""
    tag = hashlib.sha256(control_socket.encode()).hexdigest()[:8]
    return "tenantfpm_" + re.sub(r"[^A-Za-z0-9_]", "_", cgroup_parent)[:180] + "_" + tag


def _elements(values: set[int]) -> str:
    return f"elements = {{ {', '.join(str(v) for v in sorted(values))} }}" if values else ""


def changes(table: str, old: tuple[frozenset[int], frozenset[int]],
            new: tuple[frozenset[int], frozenset[int]]) -> str:
    """The sets' elements that come and go, the rules unchanged (one transaction). The
    whole table is never re-sent for a change: nftables looks each uid of a set up as a
    user name before it takes it for a number, and on a host with 10,000 users that
    reads /etc/passwd to the end 10,000 times (5-7 s, the master's loop waiting)."""
    lines = []
    for name, was, now in (("tenant_uids", old[0], new[0]), ("protected_ports", old[1], new[1])):
        for verb, elements in (("delete", was - now), ("add", now - was)):
            if elements:
                lines.append(f"{verb} element inet {table} {name} "
                             f"{{ {', '.join(map(str, sorted(elements)))} }}\n")
    return "".join(lines)


def ruleset(table: str, uids: set[int], ports: set[int], monitor_ports: frozenset[int] =
            frozenset(), monitor_gid: int = 0) -> str:
    """The whole table, replaced in one transaction (declare, delete, re-create: nft
    applies a file atomically, so no connection ever sees it half-made)."""
    monitor = (f"    oifname \"lo\" tcp flags & (syn | ack) == syn tcp dport "
               f"{{ {', '.join(map(str, sorted(monitor_ports)))} }} "
               f"meta skuid != 0 meta skgid != {monitor_gid} reject with tcp reset\n"
               if monitor_ports else "")
    return (f"table inet {table} {{}}\n"
            f"delete table inet {table}\n"
            f"table inet {table} {{\n"
            f"  set tenant_uids {{ type uid; {_elements(uids)} }}\n"
            f"  set protected_ports {{ type inet_service; {_elements(ports)} }}\n"
            f"  chain out {{ type filter hook output priority 0; policy accept;\n"
            f"    oifname \"lo\" tcp flags & (syn | ack) == syn tcp dport @protected_ports "
            f"meta skuid @tenant_uids reject with tcp reset\n"
            f"{monitor}"
            f"  }}\n"
            f"  chain in {{ type filter hook input priority 0; policy accept;\n"
            f"    iifname \"tf*\" tcp dport @protected_ports reject with tcp reset\n"
            f"  }}\n"
            f"}}\n")


class NetGuard:
    """The master's table: made whole at the start, then changed in place as tenants and
    listeners come and go."""

    def __init__(self, cgroup_parent: str, control_socket: str = "",
                 monitor_ports: frozenset[int] = frozenset(), monitor_gid: int = 0) -> None:
        reserve()  # the master makes its guard first, before any tenant's descriptor
        self.table = table_name(cgroup_parent, control_socket)
        self.monitor_ports, self.monitor_gid = monitor_ports, monitor_gid
        self.applied: tuple[frozenset[int], frozenset[int]] | None = None
        self.problem: str | None = None  # why the table could not be installed

    def update(self, uids: set[int], ports: set[int]) -> None:
        """Install the rules for these uids and ports (no-op when unchanged). Once the table
        is in, only what changed goes in, in place: a new tenant's uid, a listener's port;
        `add` costs the same with 10,000 tenants. The whole table goes in at the start and
        after a failure."""
        want = (frozenset(uids), frozenset(ports))
        if want == self.applied and self.problem is None:
            return
        try:
            if self.applied is not None and self.problem is None:
                self._nft(changes(self.table, self.applied, want))
            else:
                self._whole(ruleset(self.table, uids, ports, self.monitor_ports,
                                    self.monitor_gid))
        except TenantFPMError as e:
            self.problem = str(e)
            raise
        self.applied, self.problem = want, None

    def remove(self) -> None:
        if self.applied is None:
            return
        # nothing more to do if it fails on the way out; the next start replaces it
        with contextlib.suppress(TenantFPMError):
            self._nft(f"table inet {self.table} {{}}\ndelete table inet {self.table}\n")
        self.applied = None

    @staticmethod
    def _nft(script: str) -> None:
        nft(script)

    @staticmethod
    def _whole(script: str) -> None:
        whole_table(script)


_lib: ctypes.PyDLL | None = None
_spare: int | None = None  # a descriptor below FD_SETSIZE, freed for libnftables' socket


def reserve() -> None:
    """Hold a descriptor below FD_SETSIZE for the library's socket (see the module's
    docstring); none if the process has no such number free, or none at all (the `nft`
    command then says what is wrong)."""
    global _spare
    if _spare is None:
        try:
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        if fd < FD_SETSIZE:
            _spare = fd
        else:
            os.close(fd)


def _library() -> ctypes.PyDLL:
    """libnftables, loaded on first use (a master with no tenant never needs it). PyDLL:
    its calls keep the GIL, so no thread of the master opens a descriptor while the
    spare one is free."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.PyDLL(LIBRARY)
        except OSError:
            raise TenantFPMError(f"{LIBRARY} (package libnftables1, part of nftables) "
                                 "is not installed") from None
        ctx = ctypes.c_void_p
        lib.nft_ctx_new.argtypes, lib.nft_ctx_new.restype = [ctypes.c_uint32], ctx
        lib.nft_ctx_free.argtypes, lib.nft_ctx_free.restype = [ctx], None
        lib.nft_ctx_buffer_output.argtypes = [ctx]
        lib.nft_ctx_buffer_error.argtypes = [ctx]
        lib.nft_ctx_get_error_buffer.argtypes = [ctx]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctx, ctypes.c_char_p]
        _lib = lib
    return _lib


def nft(script: str) -> None:
    """Apply an nft script as `nft -f` does: one transaction, all of it or none. A context
    per call, so nothing of the ruleset (10,000 uids) stays cached in the master."""
    global _spare
    if _spare is None:
        _nft_command(script)
        return
    lib = _library()
    os.close(_spare)  # the lowest free number is now at most this: the socket gets it
    _spare = None
    try:
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise TenantFPMError("nft failed: cannot make a libnftables context")
        try:
            lib.nft_ctx_buffer_output(ctx)  # what nft would print stays out of the log
            lib.nft_ctx_buffer_error(ctx)
            if lib.nft_run_cmd_from_buffer(ctx, script.encode()) != 0:
                err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
                raise TenantFPMError(f"nft failed: {err.strip() or 'no reason given'}")
        finally:
            lib.nft_ctx_free(ctx)
    finally:
        reserve()


# in the command's own mount namespace: no user database, then nft reading stdin
NO_USERS = ('mount --bind /dev/null /etc/passwd || exit 111\n'
            'if [ -e /etc/nsswitch.conf ]; then\n'
            '  mount --bind /dev/null /etc/nsswitch.conf || exit 111\n'
            'fi\n'
            'exec "$1" -f -\n')


def whole_table(script: str) -> None:
    """A script naming many uids: through `nft` with no user database (the module's
    docstring says why). Where that namespace cannot be made (no `unshare`, no right to
    mount), or the command fails at all, the library applies it, slower but the same
    (its error is the one reported); nft applies a script whole or not at all, so a
    second try finds the kernel as the first did."""
    unshare = shutil.which("unshare") or shutil.which("unshare", path="/usr/bin:/bin")
    cmd = _nft_path()
    if unshare is None or cmd is None:
        nft(script)
        return
    try:
        r = subprocess.run([unshare, "--mount", "--propagation", "private", "--",
                            "/bin/sh", "-c", NO_USERS, "sh", cmd],
                           input=script, capture_output=True, text=True, timeout=TIMEOUT,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        nft(script)
        return
    if r.returncode != 0:
        nft(script)


def _nft_path() -> str | None:
    """The `nft` command, also where the master's PATH has no sbin."""
    return shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")


def _nft_command(script: str) -> None:
    """The same through the `nft` command, a process of its own with few descriptors."""
    cmd = _nft_path()
    if cmd is None:
        raise TenantFPMError("nft (package nftables) is not installed")
    try:
        r = subprocess.run([cmd, "-f", "-"], input=script, capture_output=True, text=True,
                           timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TenantFPMError(f"nft failed: {e}") from None
    if r.returncode != 0:
        raise TenantFPMError(f"nft failed: {r.stderr.strip() or r.returncode}")
