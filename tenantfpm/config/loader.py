"""Reading config files: TOML syntax, profile merge, and errors a user can act on.

Every failure becomes a ConfigError naming the file, the dotted key and, when it
can be found, the line; nothing is started or written before all of it passes.
"""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import re
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tenantfpm import safefs
from tenantfpm.config.model import GlobalConfig, Site
from tenantfpm.config.rules import parse_listen
from tenantfpm.errors import ConfigError, Problem

SHIPPED_PROFILES = Path(__file__).resolve().parent.parent / "profiles"  # package data


def read_toml(path: str | Path) -> tuple[dict[str, Any], str]:
    """Parse one file; syntax errors carry tomllib's line and column."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(path, [Problem("", f"cannot read: {e.strerror}")]) from None
    try:
        text = raw.decode()
        return tomllib.loads(text), text
    except UnicodeDecodeError as e:
        raise ConfigError(path, [Problem("", f"not UTF-8: {e.reason}")]) from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = int(m.group(1)) if m else None
        col = int(m.group(2)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        raise ConfigError(path, [Problem("", f"TOML syntax error: {msg}", line, col)]) from None


def find_line(text: str, key: str) -> int | None:
    """Best-effort line of a dotted key in TOML text, for pointing the user at it."""
    parts = re.sub(r"\[\d+\]", "", key).split(".")
    if not parts or not parts[0]:
        return None
    table: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("["):
            table = s.strip("[]").strip().split(".")
            if table == parts:
                return lineno
            continue
        m = re.match(r"^([A-Za-z0-9_.\-\"']+)\s*=", s)
        if m:
            k = [x.strip("\"'") for x in m.group(1).split(".")]
            full = table + k
            if full == parts[: len(full)] and len(full) >= min(len(parts), len(table) + 1):
                return lineno
    return None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _suggest(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Nearest valid key for an unknown one, walking the model along the path."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        current = args[0] if args and isinstance(args[0], type) else ann
    names = list(getattr(current, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if not close:
        return f"; valid keys here: {', '.join(names)}" if names else ""
    prefix = _loc(loc[:-1])
    return f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?"


def validation_problems(model: type[BaseModel], err: ValidationError) -> list[Problem]:
    problems = []
    for e in err.errors(include_url=False):
        loc, kind = tuple(e["loc"]), e["type"]
        # Union members add their type name to the path; drop it.
        loc = tuple(p for p in loc
                    if not (isinstance(p, str) and p in {"str", "int", "float", "bool"}))
        key = _loc(loc)
        if kind == "extra_forbidden":
            msg = "unknown key" + _suggest(model, loc)
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if kind not in ("value_error",) and "input" in e and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        problems.append(Problem(key, msg))
    # union errors repeat per member; keep one per key
    seen, unique = set(), []
    for p in problems:
        if p.key not in seen:
            seen.add(p.key)
            unique.append(p)
    return unique


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Profile below, site above; tables merge key by key, everything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _in_dict(data: dict[str, Any], key: str) -> bool:
    node: Any = data
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


K = TypeVar("K")
V = TypeVar("V")


def _once(cache: dict[K, V | None], key: K, lookup: Callable[[K], V]) -> V | None:
    """`lookup(key)` the first time (None if the system has no such entry), then remembered."""
    if key not in cache:
        try:
            cache[key] = lookup(key)
        except KeyError:
            cache[key] = None
    return cache[key]


def _uid_gid(name: str) -> tuple[int, int]:
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


class HostSystem:
    """The real machine, as the rules see it.

    Users and groups are looked up once per instance, and an instance lives for one
    operation (an add, a load of the registry). On a host with 10,000 users, each
    getpwnam of a recent user reads all of /etc/passwd (about 0.7 ms), and an add used
    to look its user up three times."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[int, int] | None] = {}
        self._groups: dict[str, int | None] = {}
        self._group_names: dict[int, str | None] = {}
        self._enumerated = False

    def preload(self) -> HostSystem:
        """Every user and group the system enumerates, read in one pass each, so that
        loading 10,000 tenants reads /etc/passwd once and not once per tenant. A name
        not enumerated (a directory that does not list its users) is still asked for."""
        for pw in pwd.getpwall():
            self._users.setdefault(pw.pw_name, (pw.pw_uid, pw.pw_gid))  # the first, as getpwnam
        for g in grp.getgrall():
            self._groups.setdefault(g.gr_name, g.gr_gid)
            self._group_names.setdefault(g.gr_gid, g.gr_name)
        self._enumerated = True
        return self

    def user(self, name: str) -> tuple[int, int] | None:
        return _once(self._users, name, _uid_gid)

    def user_named_as(self, uid: int) -> tuple[int, int] | None:
        """After preload(), only the enumerated users: asking for each of 10,000 tenants'
        uids by name would read /etc/passwd to its end 10,000 times, the cost preload()
        removes. A directory that lists no users may then hold such a name unseen; one
        `add` asks it."""
        if self._enumerated:
            return self._users.get(str(uid))
        return self.user(str(uid))

    def group(self, name: str) -> int | None:
        return _once(self._groups, name, lambda n: grp.getgrnam(n).gr_gid)

    def group_name(self, gid: int) -> str | None:
        return _once(self._group_names, gid, lambda g: grp.getgrgid(g).gr_name)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_executable(self, path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.X_OK)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def writable_by(self, path: str, uid: int, gid: int) -> str | None:
        try:
            return safefs.writable_by(path, uid, gid)
        except OSError as e:
            return f"{path} ({e.strerror or e})"

    def symlink_in(self, path: str) -> str | None:
        here = "/"
        for part in [c for c in path.split("/") if c]:
            here = os.path.join(here, part)
            try:
                if stat.S_ISLNK(os.lstat(here).st_mode):
                    return here
            except OSError:
                return None
        return None

    def file_type(self, path: str) -> str | None:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if stat.S_ISSOCK(mode):
            return "socket"
        return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"

    def mem_total(self) -> int:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

    def cpus(self) -> int:
        return os.cpu_count() or 0


def find_profile(name: str, profiles_dir: str) -> Path | None:
    if not re.match(r"^[A-Za-z0-9_-]+$", name):
        return None
    for d in (Path(profiles_dir), SHIPPED_PROFILES):
        candidate = d / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def available_profiles(profiles_dir: str) -> list[str]:
    names: set[str] = set()
    for d in (Path(profiles_dir), SHIPPED_PROFILES):
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def load_site(path: str | Path, profiles_dir: str, system: Any = None,
              conf: GlobalConfig | None = None) -> Site:
    """site.toml (+ its profile) to a validated Site, or a ConfigError listing every problem.

    With `conf`, also what the site may not ask for on this host (config/safety.py):
    every caller that registers or starts a tenant passes it.
    """
    from tenantfpm.config.rules import site_problems
    from tenantfpm.config.safety import host_problems

    path = str(path)
    data, text = read_toml(path)
    profile_path: str | None = None
    profile_text = ""
    merged = data
    prof = data.get("profile")
    if isinstance(prof, str) and prof:
        found = find_profile(prof, profiles_dir)
        if found is None:
            avail = ", ".join(available_profiles(profiles_dir)) or "none"
            raise ConfigError(path, [Problem("profile", f"no such profile {prof!r} "
                                                        f"(available: {avail})",
                                             find_line(text, "profile"))])
        profile_path = str(found)
        pdata, profile_text = read_toml(found)
        for forbidden in ("name", "user", "group", "root", "profile"):
            if forbidden in pdata:
                raise ConfigError(profile_path, [Problem(
                    forbidden, "a profile may not set this key; it belongs in the site file",
                    find_line(profile_text, forbidden))])
        merged = merge(pdata, data)

    def locate(problems: list[Problem]) -> None:
        by_file: dict[str, list[Problem]] = {}
        for p in problems:
            in_site = not profile_path or _in_dict(data, p.key) or not _in_dict(merged, p.key)
            target, src = (path, text) if in_site or not profile_path else (profile_path,
                                                                             profile_text)
            if p.line is None:
                p.line = find_line(src, p.key)
            by_file.setdefault(target, []).append(p)
        # report the first file with problems; a profile's problems are its own
        f, ps = next(iter(by_file.items()))
        raise ConfigError(f, ps)

    try:
        site = Site.model_validate(merged)
    except ValidationError as e:
        locate(validation_problems(Site, e))
    system = system or HostSystem()
    problems = site_problems(site, system)
    if not problems and conf is not None:
        problems = host_problems(site, conf, system)
    if problems:
        locate(problems)
    return site


def load_global(path: str | None) -> GlobalConfig:
    """The global config; a missing default file means all defaults, a named one must exist."""
    explicit = path or os.environ.get("TENANTFPM_CONFIG")
    file = explicit or "/etc/tenantfpm/tenantfpm.toml"
    if not explicit and not os.path.exists(file):
        data: dict[str, Any] = {}
        text = ""
    else:
        data, text = read_toml(file)
    try:
        conf = GlobalConfig.model_validate(data)
    except ValidationError as e:
        ps = validation_problems(GlobalConfig, e)
        for p in ps:
            p.line = find_line(text, p.key)
        raise ConfigError(file, ps) from None
    paths = conf.paths
    bad = [Problem(f"paths.{k}", f"must be an absolute path: {v!r}")
           for k, v in paths.model_dump().items() if not os.path.isabs(v)]
    if bad:
        raise ConfigError(file, bad)

    def expand(value: str) -> str:
        return value.replace("<run_dir>", paths.run_dir).replace("<log_dir>", paths.log_dir)

    master = conf.master.model_copy(update={
        k: expand(getattr(conf.master, k))
        for k in ("control_socket", "self_service_socket", "pid_file", "log_file",
                  "status_listen")
    })
    for key in ("metrics_listen", "status_listen"):
        value = getattr(master, key)
        if value:
            try:
                parse_listen(value)
            except ValueError as e:
                raise ConfigError(file, [Problem(f"master.{key}", str(e),
                                                 line=find_line(text, f"master.{key}"))]) from None
    if ((master.status_listen or master.metrics_listen)
            and HostSystem().group(master.status_listen_group) is None):
        raise ConfigError(file, [Problem("master.status_listen_group",
                                         f"no such group: {master.status_listen_group!r}",
                                         line=find_line(text, "master.status_listen_group"))])
    return conf.model_copy(update={"master": master})
