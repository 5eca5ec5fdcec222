"""What a site file may not ask for, because it would expose the host or the master.

rules.py checks a site on its own; these rules also need the global config (the
master's own files and directories) and what the host's filesystem says about
ownership. Deny by default: a root, a bind, a log directory or a socket that a
tenant could turn against the root master or its neighbours is refused with the
key and the reason, before anything is written. Pure functions of a Site, the
GlobalConfig and a read-only System view.
"""

from __future__ import annotations

import os
from typing import Protocol

from tenantfpm.config.model import GlobalConfig, Site
from tenantfpm.config.rules import System
from tenantfpm.errors import Problem
from tenantfpm.safefs import inside

# host directories a tenant's root, log dir or bind may be neither inside nor above
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
               "/dev", "/proc", "/sys", "/run", "/root", "/var/lib", "/var/log", "/var/spool",
               "/var/cache", "/var/backups", "/var/mail", "/srv/.", "/home/.")
READONLY_ONLY = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/run",
                 "/var/lib", "/root")  # system data a site may see read-only, never change
NEVER_BIND = ("/proc", "/sys", "/dev", "/boot", "/root/.ssh", "/etc/shadow", "/etc/gshadow",
              "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh", "/etc/tenantfpm")
# mount points the sandbox builds itself, or the runtime needs as the host has them
RESERVED_TARGETS = ("/proc", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                    "/libx32")
TMP = "/tmp"  # the tenant's own: a mount in it is fine, over it is not
# service accounts and groups whose rights a tenant must never get
SYSTEM_USERS = frozenset({
    "nobody", "www-data", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news",
    "uucp", "proxy", "backup", "list", "irc", "gnats", "_apt", "messagebus", "sshd", "mysql",
    "postgres", "nginx", "apache", "redis", "memcache", "postfix", "systemd-network",
    "systemd-resolve", "systemd-timesync", "systemd-coredump", "polkitd", "tenantfpm"})
PRIVILEGED_GROUPS = frozenset({
    "root", "wheel", "sudo", "adm", "disk", "shadow", "kmem", "tty", "docker", "lxd", "staff",
    "systemd-journal", "utmp", "mail", "www-data", "nginx", "apache", "mysql",
    "postgres", "ssl-cert", "sys", "bin", "daemon", "operator", "audio", "video", "input",
    "kvm", "netdev", "crontab", "tenantfpm"})
NOBODY_UID = 65534


class HostView(System, Protocol):
    def writable_by(self, path: str, uid: int, gid: int) -> str | None: ...
    def symlink_in(self, path: str) -> str | None: ...  # the first component that is a link
    def file_type(self, path: str) -> str | None: ...  # "socket", "dir", "file", "other"
    def mem_total(self) -> int: ...
    def cpus(self) -> int: ...


def master_paths(conf: GlobalConfig) -> dict[str, str]:
    p, m = conf.paths, conf.master
    out = {"paths.run_dir": p.run_dir, "paths.log_dir": p.log_dir, "paths.state_dir": p.state_dir,
           "paths.tenants_dir": p.tenants_dir, "paths.profiles_dir": p.profiles_dir,
           "master.control_socket": m.control_socket, "master.pid_file": m.pid_file}
    if m.status_listen.startswith("/"):
        out["master.status_listen"] = m.status_listen
    if m.log_file.startswith("/"):
        out["master.log_file"] = m.log_file
    return out


def _system_clash(path: str, what: str, allow_inside: tuple[str, ...] = ()) -> str | None:
    """Why `path` may not be a tenant's `what`: it is /, a system directory, or holds one."""
    p = os.path.normpath(path)
    if p == "/":
        return f"{what} cannot be / (the whole host)"
    for d in SYSTEM_DIRS:
        base = d.rstrip("/.")
        if d.endswith("/.") or base in allow_inside:  # the directory itself, not below it
            if p == base:
                return f"{what} cannot be {base} itself (every tenant's files are under it)"
        elif inside(p, base):
            return f"{what} cannot be in {base} (a system directory)"
        elif inside(base, p):
            return f"{what} cannot be {p}: it holds {base}"
    return None


def _master_clash(path: str, conf: GlobalConfig, what: str) -> str | None:
    for key, mp in master_paths(conf).items():
        if inside(path, mp) or inside(mp, path):
            return f"{what} {path} overlaps the master's {key} ({mp})"
    return None


def identity(site: Site, system: System) -> tuple[int, int] | None:
    ident = system.user(site.user)
    if ident is None:
        return None
    gid = system.group(site.group) if site.group else ident[1]
    return (ident[0], gid) if gid is not None else None


def host_problems(site: Site, conf: GlobalConfig, system: HostView) -> list[Problem]:
    """Everything a hostile or careless site file could use to reach past its tenant."""
    p: list[Problem] = []
    ident = identity(site, system)
    p += _identity(site, system)
    p += _root(site, conf, system)
    p += _listen(site, conf, system, ident)
    p += _binds(site, conf, system)
    p += _log_dir(site, conf, system, ident)
    p += _sizes(site, system)
    if ident is not None and site.runtime.command and os.path.isabs(site.runtime.command[0]):
        prog = site.runtime.command[0]
        weak = system.writable_by(prog, *ident)
        if weak:
            p.append(Problem("runtime.command", f"{prog}: user {site.user!r} can change "
                                                f"{weak}; the runtime must be a program the "
                                                "tenant cannot replace"))
    return p


def _identity(site: Site, system: System) -> list[Problem]:
    p = []
    ident = system.user(site.user)
    if ident is not None and (site.user in SYSTEM_USERS or ident[0] == NOBODY_UID):
        p.append(Problem("user", f"{site.user!r} is a system account; each tenant needs a "
                                 "user of its own"))
    owner = system.user(site.listen.owner)
    if ident is not None and owner is not None and owner[0] == ident[0]:
        p.append(Problem("user", f"{site.user!r} owns the tenant's socket (listen.owner): "
                                 "the web server's user cannot be a tenant"))
    group = site.group
    if group and group in PRIVILEGED_GROUPS:
        p.append(Problem("group", f"{group!r} is a privileged group"))
    gid = system.group(group) if group else (ident[1] if ident else None)
    listen_gid = system.group(site.listen.group)
    if gid is not None and listen_gid is not None and gid == listen_gid:
        p.append(Problem("group" if group else "user",
                         f"the tenant's group (gid {gid}) is listen.group "
                         f"{site.listen.group!r}: it could connect to every tenant's socket"))
    return p


def _root(site: Site, conf: GlobalConfig, system: HostView) -> list[Problem]:
    p = []
    root = os.path.normpath(site.root)
    why = _system_clash(root, "root") or _master_clash(root, conf, "root")
    if why:
        p.append(Problem("root", why))
    link = system.symlink_in(root)
    if link:
        p.append(Problem("root", f"{link} is a symlink: name the real path (the sandbox "
                                 "mounts the root without following links)"))
    if site.chdir and not inside(site.chdir, root):
        p.append(Problem("chdir", f"{site.chdir} is outside the tenant's root {root}"))
    return p


def _listen(site: Site, conf: GlobalConfig, system: HostView,
            ident: tuple[int, int] | None) -> list[Problem]:
    p = []
    lst = site.listen
    path = lst.address if lst.address.startswith("/") else (
        os.path.join(conf.paths.run_dir, f"{site.name}.sock") if not lst.address else None)
    key = "listen.address" if lst.address else "name"
    if path is not None:
        for mkey, mp in master_paths(conf).items():
            if os.path.normpath(path) == os.path.normpath(mp):
                p.append(Problem(key, f"the socket {path} would replace the master's "
                                      f"{mkey}"))
        kind = system.file_type(path)
        if kind not in (None, "socket"):
            p.append(Problem(key, f"{path} exists and is not a socket; tenantfpm would "
                                  "delete it"))
        if ident is not None:
            weak = system.writable_by(os.path.dirname(path), *ident)
            if weak:
                p.append(Problem(key, f"user {site.user!r} can change {weak}, where the "
                                      "socket would be made"))
        try:
            mode = int(lst.mode, 8)
        except ValueError:
            mode = 0  # rules.py reports the syntax
        if mode & 0o007:
            p.append(Problem("listen.mode", f"{lst.mode} lets every user of the host connect; "
                                            "give access by owner and group (e.g. \"0660\")"))
    return p


def _binds(site: Site, conf: GlobalConfig, system: HostView) -> list[Problem]:
    p = []
    for i, b in enumerate(site.isolation.binds):
        key = f"isolation.binds[{i}]"
        src = os.path.normpath(b.source) if b.source else ""
        tgt = os.path.normpath(b.target or b.source) if (b.target or b.source) else ""
        if not src.startswith("/") or not tgt.startswith("/"):
            continue  # rules.py reports it
        why = None
        if src in ("/", "/root"):
            why = f"cannot bind {src}"
        else:
            for d in NEVER_BIND:
                if inside(src, d) or inside(d, src):
                    why = f"cannot bind {src}: it is or holds {d}"
                    break
        why = why or _master_clash(src, conf, "source")
        if not why and not b.readonly:
            for d in READONLY_ONLY:
                if inside(src, d) or inside(d, src):
                    why = f"{src} is system data: bind it with readonly = true"
                    break
        if why:
            p.append(Problem(f"{key}.source", why))
        link = system.symlink_in(src)
        if link:
            p.append(Problem(f"{key}.source", f"{link} is a symlink: name the real path"))
        if tgt in ("/", TMP) or any(inside(tgt, r) or inside(r, tgt) for r in RESERVED_TARGETS):
            p.append(Problem(f"{key}.target", f"cannot mount over {tgt}: the sandbox "
                                              "provides it"))
    return p


def _log_dir(site: Site, conf: GlobalConfig, system: HostView,
             ident: tuple[int, int] | None) -> list[Problem]:
    if not site.log.dir or not site.log.dir.startswith("/"):
        return []
    d = os.path.normpath(site.log.dir)
    p = []
    why = _system_clash(d, "log.dir", allow_inside=("/var/log",))
    if not why:
        for mkey, mp in master_paths(conf).items():
            if mkey != "paths.log_dir" and (inside(d, mp) or inside(mp, d)):
                why = f"log.dir {d} overlaps the master's {mkey} ({mp})"
        if os.path.normpath(d) == os.path.normpath(conf.paths.log_dir):
            why = f"log.dir cannot be paths.log_dir itself ({d}): name the tenant's own"
    if not why and inside(d, site.root):
        why = f"{d} is inside the tenant's root: the tenant could redirect root's writes"
    if not why and ident is not None:
        weak = system.writable_by(d, *ident)
        if weak:
            why = f"user {site.user!r} can change {weak}"
    if not why:
        link = system.symlink_in(d)
        if link:
            why = f"{link} is a symlink: name the real path"
    if why:
        p.append(Problem("log.dir", why))
    return p


def _sizes(site: Site, system: HostView) -> list[Problem]:
    p = []
    mem, cpus = system.mem_total(), system.cpus()
    if mem and site.isolation.tmp_size > mem:
        p.append(Problem("isolation.tmp_size", f"{site.isolation.tmp_size >> 20}M is more than "
                                               f"the host's memory ({mem >> 20}M): /tmp is "
                                               "held in memory"))
    if mem and site.limits.memory > mem:
        p.append(Problem("limits.memory", f"{site.limits.memory >> 20}M is more than the "
                                          f"host's memory ({mem >> 20}M)"))
    if cpus and site.limits.cpu > cpus:
        p.append(Problem("limits.cpu", f"{site.limits.cpu:g} cores is more than the host's "
                                       f"{cpus}"))
    return p
