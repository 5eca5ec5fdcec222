"""The tenants' own socket: a hosting customer's Unix user reviews its tenant's logs,
reads its status and reloads it, without root and without anyone's help.

Who calls is what the kernel says (SO_PEERCRED on the connection), never what the
request says: the caller's uid picks the one tenant whose user it is (a user belongs to
one tenant alone, registry.py), and a name in the request only has to agree with it. So
another tenant's user, a forged name or a path in a name all get the same refusal, which
tells nothing about other tenants. The socket is world-connectable (0666) for that
reason: connecting gives nothing by itself. root is sent to the control socket.

What it serves is read-only but for a reload of the caller's own tenant, at most one
per RELOAD_COOLDOWN: a tenant's user can make its own tenant busy, not the master. Any
local user may connect, so each is bounded by the kernel's word on who it is: at most
CONNECTIONS_PER_USER connections at once (the rest are closed as they are accepted),
REQUESTS_PER_S requests and LOG_BYTES_PER_S bytes of log a second (past them: 429).
Logs are read by the master from its own verified log directories (the tenant cannot
read them itself: they are root's, 0640), a bounded slice per request; the CLI pages
and follows with offsets (`tenantfpm logs -f`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tenantfpm import fdguard, safefs
from tenantfpm.errors import TenantFPMError
from tenantfpm.logs import not_kept
from tenantfpm.master.control import NAME, BadRequest, Refused, errors
from tenantfpm.ratelimit import TokenBucket

if TYPE_CHECKING:
    from tenantfpm.master.arbiter import Master
    from tenantfpm.master.pool import Pool

KINDS = ("error", "slow", "access")
CHUNK_MAX = 1 << 20  # bytes of log per answer
RELOAD_COOLDOWN = 5.0  # seconds between two reloads a tenant's user asks for
CONNECTIONS_PER_USER = 16
REQUESTS_PER_S = 10.0  # per local user, with a burst of twice that
LOG_BYTES_PER_S = 2 << 20  # per local user: `logs -f` and paging, never the master's loop


def peer_uid(request: web.Request) -> int:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        raise Refused("the caller cannot be identified")
    return fdguard.peer_uid(sock)


def own_tenant(pools: dict[str, Pool], uid: int, asked: str | None) -> Pool:
    """The caller's tenant, by uid; a name asked for must be that one."""
    if uid == 0:
        raise Refused("root uses the control socket (run tenantfpm as root)")
    mine = [p for p in pools.values() if p.tenant.uid == uid]
    if len(mine) != 1:
        raise Refused(f"no tenant runs as uid {uid}")
    pool = mine[0]
    if asked is not None and asked != pool.tenant.name:
        raise Refused(f"uid {uid} may act on its own tenant only ({pool.tenant.name})")
    return pool


def read_slice(log_dir: str, kind: str, offset: int, limit: int) -> dict[str, Any]:
    """Up to `limit` bytes of `<log_dir>/<kind>.log` from `offset` (negative: that many
    bytes before the end), opened from the verified directory, never a link or a FIFO."""
    try:
        dfd = safefs.open_trusted_dir(log_dir)
    except FileNotFoundError:
        return {"exists": False, "inode": None, "size": 0, "offset": 0, "data": ""}
    try:
        try:
            fd = safefs.open_in(dfd, f"{kind}.log", os.O_RDONLY)
        except FileNotFoundError:
            return {"exists": False, "inode": None, "size": 0, "offset": 0, "data": ""}
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        start = max(0, st.st_size + offset) if offset < 0 else min(offset, st.st_size)
        want = min(limit, CHUNK_MAX)
        data = os.pread(fd, want, start)
        if len(data) == want and b"\n" in data:  # whole lines: no character cut in two
            data = data[: data.rindex(b"\n") + 1]
    finally:
        os.close(fd)
    return {"exists": True, "inode": st.st_ino, "size": st.st_size, "offset": start,
            "next": start + len(data), "data": data.decode(errors="replace")}


class SelfService:
    def __init__(self, master: Master, path: str) -> None:
        self.master = master
        self.path = path
        self.last_reload: dict[str, float] = {}
        self.requests: dict[int, TokenBucket] = {}  # by uid
        self.log_bytes: dict[int, TokenBucket] = {}
        app = web.Application(middlewares=[errors, self.rate_limit], client_max_size=4096)
        app["master"] = master
        r = app.router
        r.add_get("/v1/self/status", self.status)
        r.add_get("/v1/self/logs", self.logs)
        r.add_post("/v1/self/reload", self.reload)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    keepalive_timeout=5)

    async def start(self) -> None:
        await self.runner.setup()
        # anyone may ask; only a tenant's user is answered; nobody can hand the master a
        # descriptor to close (fdguard)
        await web.SockSite(self.runner, fdguard.unix_listener(
            self.path, 0o666, per_user=CONNECTIONS_PER_USER)).start()

    async def stop(self) -> None:
        await self.runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @web.middleware
    async def rate_limit(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """REQUESTS_PER_S per local user (uid 0 is not served here anyway)."""
        uid = request["uid"] = peer_uid(request)  # asked of the kernel once per request
        bucket = self.requests.setdefault(uid, TokenBucket(REQUESTS_PER_S, 2 * REQUESTS_PER_S))
        if len(self.requests) > 4096:  # users come and go: forget the full buckets
            self._forget_full(self.requests)
        if bucket.available(time.monotonic()) < 1:
            return web.json_response({"error": "too many requests: try again in "
                                               f"{bucket.wait(1):.1f}s"}, status=429)
        bucket.take(1)
        return await handler(request)

    @staticmethod
    def _forget_full(buckets: dict[int, TokenBucket]) -> None:
        now = time.monotonic()
        for uid in [u for u, b in buckets.items() if b.available(now) >= b.burst]:
            del buckets[uid]

    def _pool(self, request: web.Request) -> Pool:
        asked = request.query.get("name") or None
        if asked is not None and not NAME.fullmatch(asked):
            raise Refused(f"not a tenant name: {asked[:64]!r}")
        return own_tenant(self.master.pools, request["uid"], asked)

    async def status(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        pool.sample()
        return web.json_response(pool.status(full=request.query.get("full") == "1"))

    async def logs(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        kind = request.query.get("kind", "error")
        if kind not in KINDS:
            raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", str(CHUNK_MAX)))
        except ValueError:
            raise BadRequest("offset and limit are integers") from None
        if limit <= 0:
            raise BadRequest("limit must be positive")
        uid = pool.tenant.uid
        budget = self.log_bytes.setdefault(uid, TokenBucket(LOG_BYTES_PER_S,
                                                            2 * LOG_BYTES_PER_S))
        allowed = budget.available(time.monotonic())
        if allowed < 4096:
            return web.json_response({"error": "too much log asked for: try again in "
                                               f"{budget.wait(64 << 10):.1f}s"}, status=429)
        limit = min(limit, allowed)
        site = pool.tenant.site
        try:
            result = await asyncio.to_thread(read_slice, pool.tenant.log_dir, kind, offset,
                                             limit)
        except OSError as e:  # not a regular file, a link: said, never followed
            raise TenantFPMError(f"cannot read {kind}.log: {e.strerror or e}") from None
        budget.take(result.get("next", 0) - result.get("offset", 0))
        result["not_kept"] = not_kept(site, kind)
        return web.json_response(result)

    async def reload(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        name = pool.tenant.name
        now = time.monotonic()
        wait = self.last_reload.get(name, -RELOAD_COOLDOWN) + RELOAD_COOLDOWN - now
        if wait > 0:
            return web.json_response({"error": f"tenant {name} was reloaded moments ago: "
                                               f"try again in {wait:.0f}s"}, status=429)
        self.last_reload[name] = now
        pool.log.event("notice", f"reload asked by its user (uid {pool.tenant.uid}, "
                                 "self-service socket)")
        return web.json_response(await self.master.reload_one(name))
