"""The worker's filesystem view: a tmpfs root assembled from binds, then pivot_root.

`plan()` decides (pure: it asks a `Probe` what the host has and returns a
list of steps the tests can read); `build()` carries the steps out in the
worker's own mount namespace. The master plans once per tenant start or
reload; each worker only executes.

What the tenant sees (SPEC 6): read-only /usr, /lib*, /bin, /sbin and the /etc
pieces a runtime needs; an /etc/passwd and /etc/group naming only root and the
tenant; its root read-write at the same path as on the host (so nginx's
SCRIPT_FILENAME needs no rewriting); its own /tmp; /dev with five nodes; its
own /proc. Everything else of the host is absent, not merely unreadable.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

from tenantfpm.sandbox import linux

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# what php-cgi, libc's resolver, TLS and timezone handling read from /etc (and
# resolv.conf: resolver_steps)
ETC_ENTRIES = ("php", "ssl", "ca-certificates", "ca-certificates.conf", "alternatives",
               "localtime", "timezone", "hosts", "host.conf", "nsswitch.conf",
               "gai.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "mime.types",
               "protocols", "services", "os-release", "debian_version", "ImageMagick-6",
               "fonts")
DEV_NODES = ("null", "zero", "full", "random", "urandom")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2"}
INI_TARGET = "/etc/tenantfpm/php.ini"  # where a tenant's generated php.ini appears inside
NOLOGIN = "/usr/sbin/nologin"
RO = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
RESOLV_CONF = "/etc/resolv.conf"
ONE_QUERY_AT_A_TIME = "options single-request\n"
RESOLV_CONF_LIMIT = 16 << 10  # glibc heeds 3 servers and a few options; orders are 64 KiB


class Probe(Protocol):
    def kind(self, path: str) -> str | None:
        """"dir", "file", "link:<target>", or None when absent."""

    def text(self, path: str) -> str | None:
        """A host file's text (links followed: these are root's), None when unreadable."""


class HostProbe:
    def text(self, path: str) -> str | None:
        try:
            with open(path, "rb") as f:
                return f.read(RESOLV_CONF_LIMIT).decode("utf-8", "replace")
        except OSError:
            return None

    def kind(self, path: str) -> str | None:
        if os.path.islink(path):
            return "link:" + os.readlink(path)
        if os.path.isdir(path):
            return "dir"
        if os.path.exists(path):
            return "file"
        return None


@dataclass(frozen=True)
class Step:
    op: str  # mkdir | touch | symlink | write | mount | bind | pivot | seal
    target: str  # path inside the sandbox
    source: str | None = None
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    readonly: bool = False
    content: str = ""
    # bind only: source and target resolved without following any symlink (a tenant's
    # tree can hold links), the target created as `kind` ("dir" or "file") on the way
    nofollow: bool = False
    kind: str = "dir"


@dataclass(frozen=True)
class RootSpec:
    new_root: str  # an empty host directory the tmpfs root is mounted on
    tenant_root: str
    user: str
    uid: int
    gid: int
    group: str
    tmp_source: str | None = None  # the tenant's shared /tmp (a tmpfs the master mounted)
    tmp_size: int = 64 << 20  # used when there is no shared one
    ini_source: str | None = None
    hide_processes: bool = True
    # the seccomp filter refuses sendmmsg (a tenant behind a unix socket passes no
    # descriptors: seccomp.passing_rules), which glibc's resolver uses for A and AAAA
    queries_one_at_a_time: bool = False
    binds: list[tuple[str, str, bool]] = field(default_factory=list)  # source, target, ro


_DEV_STEPS = tuple(
    [Step("mkdir", "/dev"),
     Step("mount", "/dev", source="tmpfs", fstype="tmpfs",
          flags=linux.MS_NOSUID | linux.MS_NOEXEC, data="size=64k,nr_inodes=64,mode=755")]
    + [step for node in DEV_NODES
       for step in (Step("touch", f"/dev/{node}"), Step("bind", f"/dev/{node}",
                                                       source=f"/dev/{node}"))]
    + [Step("symlink", f"/dev/{name}", source=target) for name, target in DEV_LINKS.items()])


def passwd(spec: RootSpec) -> str:
    return (f"root:x:0:0:root:/root:{NOLOGIN}\n"
            f"{spec.user}:x:{spec.uid}:{spec.gid}::{spec.tenant_root}:{NOLOGIN}\n")


def group(spec: RootSpec) -> str:
    return f"root:x:0:\n{spec.group}:x:{spec.gid}:\n"


def _mirror(path: str, probe: Probe, readonly: bool, allow_links: bool) -> list[Step]:
    """Make `path` exist inside as it does on the host: a symlink, a dir or a file bind."""
    kind = probe.kind(path)
    if kind is None:
        return []
    if kind.startswith("link:"):
        target = kind[5:]
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if allow_links or resolved.startswith(("/usr/", "/etc/")):
            return [Step("symlink", path, source=target)]
        kind = probe.kind(resolved)  # e.g. resolv.conf -> /run/...: bind what it points at
        if kind not in ("dir", "file"):
            return []
        return [Step("mkdir" if kind == "dir" else "touch", path),
                Step("bind", path, source=resolved, readonly=readonly)]
    return [Step("mkdir" if kind == "dir" else "touch", path),
            Step("bind", path, source=path, readonly=readonly)]


_HOST = HostProbe()
SYSTEM_STEPS_TTL = 60.0  # seconds the host's part of the plan is reused across tenants
_system_cache: tuple[float, tuple[Step, ...]] | None = None


def _system_steps(probe: Probe) -> tuple[Step, ...]:
    """The part of every tenant's plan that mirrors the host (tmpfs root, system dirs,
    /etc pieces). The host's master plans for every tenant it starts: a thousand
    tenants share one tuple of these (frozen) steps instead of a copy each."""
    global _system_cache
    now = time.monotonic()
    if probe is _HOST and _system_cache and now - _system_cache[0] < SYSTEM_STEPS_TTL:
        return _system_cache[1]
    steps = [Step("mount", "/", source="tmpfs", fstype="tmpfs",
                  flags=linux.MS_NOSUID | linux.MS_NODEV, data="size=1m,nr_inodes=4096,mode=755")]
    for d in SYSTEM_DIRS:
        steps += _mirror(d, probe, readonly=True, allow_links=True)
    steps.append(Step("mkdir", "/etc"))
    for name in ETC_ENTRIES:
        steps += _mirror(f"/etc/{name}", probe, readonly=True, allow_links=False)
    if probe is _HOST:
        _system_cache = (now, tuple(steps))
    return tuple(steps)


def resolver_steps(probe: Probe, one_at_a_time: bool) -> list[Step]:
    """/etc/resolv.conf: the host's as it is; or, where the filter refuses sendmmsg, a
    copy that adds `options single-request`. Without it glibc sends the A and AAAA
    queries of every getaddrinfo() in one sendmmsg and, refused, fails the lookup (it
    never falls back to send()); with it, it sends them one after the other. The copy is
    as current as a bind would be: both are taken at each start."""
    if not one_at_a_time:
        return _mirror(RESOLV_CONF, probe, readonly=True, allow_links=False)
    text = probe.text(RESOLV_CONF) or ""
    if text and not text.endswith("\n"):
        text += "\n"
    return [Step("write", RESOLV_CONF, content=text + ONE_QUERY_AT_A_TIME)]


def plan(spec: RootSpec, probe: Probe | None = None) -> list[Step]:
    probe = probe or _HOST
    steps = list(_system_steps(probe))
    steps += resolver_steps(probe, spec.queries_one_at_a_time)
    steps += [Step("write", "/etc/passwd", content=passwd(spec)),
              Step("write", "/etc/group", content=group(spec))]
    if spec.ini_source:
        steps += [Step("mkdir", os.path.dirname(INI_TARGET)), Step("touch", INI_TARGET),
                  Step("bind", INI_TARGET, source=spec.ini_source, readonly=True)]
    # /tmp before the tenant root: a root that lives under /tmp must not be hidden by it
    steps.append(Step("mkdir", "/tmp"))
    if spec.tmp_source:
        steps.append(Step("bind", "/tmp", source=spec.tmp_source))
    else:
        steps.append(Step("mount", "/tmp", source="tmpfs", fstype="tmpfs",
                          flags=linux.MS_NOSUID | linux.MS_NODEV,
                          data=f"size={spec.tmp_size},mode=1777"))
    steps += _DEV_STEPS
    steps += [Step("mkdir", "/proc"),
              Step("mount", "/proc", source="proc", fstype="proc",
                   flags=linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                   data="hidepid=2" if spec.hide_processes else None)]
    # the tenant's tree and what the site binds: sources and targets (a target may lie
    # in the tenant's tree, or its /tmp) are resolved without following any link
    steps.append(Step("bind", spec.tenant_root, source=spec.tenant_root, nofollow=True))
    for source, target, readonly in spec.binds:
        kind = probe.kind(source)
        if kind is None:
            raise FileNotFoundError(f"isolation.binds: {source} does not exist")
        steps.append(Step("bind", target, source=source, readonly=readonly, nofollow=True,
                          kind="file" if kind == "file" else "dir"))
    steps += [Step("pivot", "/"), Step("seal", "/", flags=RO)]
    return steps


def bind_flags(s: Step) -> int:
    """The flags a bind is remounted with (a warm PHP is told them: warm.py)."""
    flags = linux.MS_NOSUID | (linux.MS_NODEV if not s.target.startswith("/dev/") else 0)
    return flags | (linux.MS_RDONLY if s.readonly else 0)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _bind_nofollow(root: str, s: Step) -> None:
    """mount --bind by file descriptors: the source opened from / and the target from the
    new root with no symlink allowed in any component, so a tenant that swaps a directory
    for a link between check and spawn gets an error, never a view of someone else's
    files or root's mkdir in a directory of its choosing."""
    assert s.source is not None
    src = linux.openat2(linux.AT_FDCWD, s.source, linux.O_PATH, linux.RESOLVE_NO_SYMLINKS)
    try:
        parent, name = _make_parents(root, s.target)
        try:
            _make_last(parent, name, s.kind)
            tgt = linux.openat2(parent, name, linux.O_PATH,
                                linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_BENEATH)
            try:
                linux.mount(_fd_path(src), _fd_path(tgt), None, linux.MS_BIND | linux.MS_REC)
            finally:
                os.close(tgt)
            # the mount now on top of that name, not the directory under it
            top = linux.openat2(parent, name, linux.O_PATH,
                                linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_BENEATH)
            try:
                linux.mount(None, _fd_path(top), None,
                            linux.MS_REMOUNT | linux.MS_BIND | bind_flags(s))
            finally:
                os.close(top)
        finally:
            os.close(parent)
    finally:
        os.close(src)


def _make_parents(root: str, target: str) -> tuple[int, str]:
    """(fd of the target's parent inside `root`, the last name), each directory on the
    way made if missing and never a symlink."""
    parts = [p for p in target.split("/") if p]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            nfd = linux.openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY,
                                linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_BENEATH)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def _make_last(parent: int, name: str, kind: str) -> None:
    if kind == "file":
        with contextlib.suppress(FileExistsError):
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=parent))
    else:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent)


def build(root: str, steps: list[Step] | tuple[Step, ...]) -> None:
    """Carry out the plan on the empty host directory `root`; the caller is root in a
    fresh mount namespace."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)  # nothing leaks out

    def inside(p: str) -> str:
        return os.path.join(root, p.lstrip("/"))

    for s in steps:
        t = inside(s.target)
        if s.op == "mkdir":
            os.makedirs(t, mode=0o755, exist_ok=True)
        elif s.op == "touch":
            os.makedirs(os.path.dirname(t), mode=0o755, exist_ok=True)
            os.close(os.open(t, os.O_CREAT | os.O_WRONLY, 0o644))
        elif s.op == "symlink":
            os.symlink(s.source or "", t)
        elif s.op == "write":
            fd = os.open(t, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            try:
                os.write(fd, s.content.encode())
            finally:
                os.close(fd)
        elif s.op == "mount":
            linux.mount(s.source, t, s.fstype, s.flags, s.data)
        elif s.op == "bind" and s.nofollow:
            _bind_nofollow(root, s)
        elif s.op == "bind":
            assert s.source is not None
            linux.mount(s.source, t, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(None, t, None, linux.MS_REMOUNT | linux.MS_BIND | bind_flags(s))
        elif s.op == "pivot":
            os.chdir(root)
            linux.pivot_root(".", ".")  # the old root ends up stacked under "/" ...
            linux.umount2(".", linux.MNT_DETACH)  # ... and is detached here
            os.chdir("/")
        elif s.op == "seal":  # no more files in the tmpfs root: make it read-only
            linux.mount(None, "/", None, linux.MS_REMOUNT | linux.MS_BIND | s.flags)
        else:
            raise ValueError(f"unknown step {s.op}")
