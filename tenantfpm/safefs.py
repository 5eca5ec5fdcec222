"""Paths a tenant can influence, opened by the root master without trusting them.

The master writes logs, reads PHP binaries and creates sockets as root. Any
path on the way that a tenant can write lets it swap a component for a
symlink, a FIFO or a file of its choosing between the master's check and its
use. So the master never uses such a path twice: it opens a directory it has
verified (every component owned by root and writable by nobody else, sticky
directories such as /tmp allowed) and works relative to that descriptor with
O_NOFOLLOW, checks what it opened with fstat, and changes modes with fchmod.

`writable_by()` is the check's side of the same rule: which component of a
path a given uid/gid could replace (for `check` to refuse log dirs and runtime
binaries a tenant can write).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

MAX_LINKS = 40  # the kernel's own limit on symlinks in one resolution


class UnsafePath(OSError):
    """A path the master will not use: says which component and why."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, f"{path}: {why}")
        self.path = path
        self.why = why

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


def trusted(st: os.stat_result) -> bool:
    """Only root can change this directory's entries (a sticky dir protects root's own)."""
    if st.st_uid != 0:
        return False
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return False
    return not (st.st_mode & stat.S_IWGRP and st.st_gid != 0 and not st.st_mode & stat.S_ISVTX)


def _components(path: str) -> list[str]:
    if not os.path.isabs(path):
        raise UnsafePath(path, "not an absolute path")
    return [c for c in path.split("/") if c not in ("", ".")]


def open_trusted_dir(path: str, create_mode: int | None = None) -> int:
    """A directory fd for `path`, every component verified root-only; no link is
    followed that a non-root user could have placed. With `create_mode`, missing components are
    made (owned by root, that mode). The caller closes the fd."""
    todo = _components(path)
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    where = "/"
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":  # a relative link's way up: re-verify the parent
                nfd = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = nfd
                where = os.path.dirname(where) or "/"
                if not trusted(os.fstat(fd)):
                    raise UnsafePath(where, "not a directory only root can change")
                continue
            here = os.path.join(where, name)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, create_mode, dir_fd=fd)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                # a root-owned link in a verified directory is root's choice: follow it
                if st.st_uid != 0:
                    raise UnsafePath(here, f"a symlink owned by uid {st.st_uid}")
                links += 1
                if links > MAX_LINKS:
                    raise UnsafePath(path, "too many levels of symbolic links")
                target = os.readlink(name, dir_fd=fd)
                todo = _components(target) + todo if target.startswith("/") else (
                    [c for c in target.split("/") if c not in ("", ".")] + todo)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    where = "/"
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(here, "not a directory")
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = nfd
            fst = os.fstat(fd)
            if not trusted(fst):
                raise UnsafePath(here, f"owned by uid {fst.st_uid} gid {fst.st_gid} with "
                                       f"mode {stat.S_IMODE(fst.st_mode):04o}: a user other "
                                       "than root could replace what is in it")
            where = here
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_in(dirfd: int, name: str, flags: int, mode: int = 0o640) -> int:
    """`name` (one component) in a verified directory: never a link, never a FIFO or
    device (O_NONBLOCK keeps the open itself from waiting), only a regular file."""
    if "/" in name or name in ("", ".", ".."):
        raise UnsafePath(name, "not a single file name")
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode,
                 dir_fd=dirfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(name, "not a regular file")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str, limit: int) -> bytes:
    """The first `limit` bytes of a regular file, read without blocking on a FIFO and
    without mapping it (a file the owner truncates under a mapping is SIGBUS)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(path, "not a regular file")
        chunks, offset = [], 0
        while offset < limit:
            data = os.pread(fd, min(1 << 20, limit - offset), offset)
            if not data:
                break
            chunks.append(data)
            offset += len(data)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _may_write(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return True  # an owner can always chmod itself write access
    if st.st_gid == gid and st.st_mode & stat.S_IWGRP:
        return True
    return bool(st.st_mode & stat.S_IWOTH)


def _may_replace(parent: os.stat_result, entry: os.stat_result, uid: int, gid: int) -> bool:
    """Can uid/gid rename or unlink `entry` out of `parent` (and put something else there)?"""
    if not _may_write(parent, uid, gid):
        return False
    sticky = parent.st_mode & stat.S_ISVTX
    return not sticky or entry.st_uid == uid or parent.st_uid == uid


def writable_by(path: str, uid: int, gid: int) -> str | None:
    """The first component of `path` (links followed as the kernel would) that uid/gid
    could modify or replace, or None. A missing component ends the walk: what does
    not exist yet is judged by its parent."""
    todo = _components(path)
    where = "/"
    parent = os.lstat("/")
    if _may_write(parent, uid, gid):
        return "/"
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":  # `parent` is always the directory `where` names
            where = os.path.dirname(where) or "/"
            parent = os.lstat(where)
            continue
        here = os.path.join(where, name)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return None
        if _may_replace(parent, st, uid, gid):
            return here
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise UnsafePath(path, "too many levels of symbolic links")
            target = os.readlink(here)
            parts = [c for c in target.split("/") if c not in ("", ".")]
            if target.startswith("/"):
                where, parent = "/", os.lstat("/")
            todo = parts + todo
            continue
        if not todo and _may_write(st, uid, gid):
            return here
        if todo and not stat.S_ISDIR(st.st_mode):
            return None
        where, parent = here, st
    return None


def inside(path: str, base: str) -> bool:
    """`path` is `base` or below it (both normalised, no links resolved)."""
    p, b = os.path.normpath(path), os.path.normpath(base)
    return p == b or p.startswith(b.rstrip("/") + "/")
