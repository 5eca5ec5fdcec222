"""The control API: HTTP/JSON on a 0600 Unix socket, the only way the CLI talks
to the master. Errors come back as {"error": "..."} with a status code the CLI
maps to its exit codes."""

from __future__ import annotations

import contextlib
import os
import re
import traceback
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tenantfpm import fdguard
from tenantfpm.config.model import NAME_PATTERN
from tenantfpm.errors import ConfigError, TenantFPMError

NAME = re.compile(NAME_PATTERN)

if TYPE_CHECKING:
    from tenantfpm.master.arbiter import Master


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class BadRequest(TenantFPMError):
    """The caller sent something malformed: 400, nothing changed."""


class Refused(TenantFPMError):
    """403: the self-service socket's caller is not the user of the tenant it names."""


def _name(request: web.Request) -> str:
    """A tenant name from the URL: exactly the names a site file may have, nothing that
    could name a path (the router has already decoded %2F)."""
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        raise BadRequest(f"not a tenant name: {name!r}")
    return name


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as e:
        raise BadRequest(f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    from tenantfpm.master.arbiter import NotFound

    try:
        return await handler(request)
    except BadRequest as e:
        return _error(400, str(e))
    except Refused as e:
        return _error(403, str(e))
    except NotFound as e:
        return _error(404, str(e))
    except ConfigError as e:
        return _error(422, str(e))
    except TenantFPMError as e:
        return _error(409, str(e))
    except web.HTTPException:
        raise
    except Exception as e:  # a bug: the master keeps running, the caller gets the reason
        master = request.app["master"]
        master.log("error", f"internal error in {request.method} {request.path}: "
                            f"{''.join(traceback.format_exception(e)).strip()}")
        return _error(500, f"internal error: {e!r} (details in the master log)")


class ControlServer:
    def __init__(self, master: Master) -> None:
        self.master = master
        self.path = master.conf.master.control_socket
        app = web.Application(middlewares=[errors])
        app["master"] = master
        r = app.router
        r.add_get("/v1/tenants", self.list)
        r.add_post("/v1/tenants", self.add)
        r.add_delete("/v1/tenants/{name}", self.remove)
        r.add_get("/v1/status", self.status_all)
        r.add_get("/v1/tenants/{name}/status", self.status)
        r.add_post("/v1/tenants/{name}/{action:reload|start|stop|restart}", self.action)
        r.add_post("/v1/reload", self.reload_all)
        r.add_post("/v1/reopen-logs", self.reopen_logs)
        r.add_post("/v1/shutdown", self.shutdown)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self.runner.setup()
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        # 0600 from the first moment; the path is root's (run_dir): no tenant can swap it
        await web.SockSite(self.runner, fdguard.unix_listener(self.path, 0o600)).start()

    async def stop(self) -> None:
        await self.runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response(self.master.list())

    async def status_all(self, request: web.Request) -> web.Response:
        full = request.query.get("full") == "1"
        return web.json_response([p.status(full) for p in self.master.pools.values()]
                                 + [{"name": n, "state": "failed", "error": e}
                                    for n, e in self.master.broken.items()])

    async def status(self, request: web.Request) -> web.Response:
        pool = self.master.pool(_name(request))
        pool.sample()
        return web.json_response(pool.status(full=request.query.get("full") == "1"))

    async def add(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        path = body.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise BadRequest('"path" must be the absolute path of a site file')
        result = await self.master.add(path, bool(body.get("replace")))
        return web.json_response(result)

    async def remove(self, request: web.Request) -> web.Response:
        name = _name(request)
        await self.master.remove(name)
        return web.json_response({"name": name, "removed": True})

    async def action(self, request: web.Request) -> web.Response:
        name, action = _name(request), request.match_info["action"]
        m = self.master
        if action == "reload":
            result = await m.reload_one(name)
        elif action == "start":
            result = await m.start_one(name)
        elif action == "stop":
            result = await m.stop_one(name)
        else:
            await m.stop_one(name)
            result = await m.start_one(name)
        return web.json_response(result)

    async def reload_all(self, request: web.Request) -> web.Response:
        result = await self.master.reload_all()
        return web.json_response({"reloaded": sorted(n for n, r in result.items()
                                                     if r in ("reloaded", "started")),
                                  "tenants": result})

    async def reopen_logs(self, request: web.Request) -> web.Response:
        self.master.reopen_logs()
        return web.json_response({"reopened": True})

    async def shutdown(self, request: web.Request) -> web.Response:
        body = await _json_object(request) if request.can_read_body else {}
        graceful = not body.get("now")
        self.master.loop.call_soon(lambda: self.master.loop.create_task(
            self.master.shutdown(graceful)))
        return web.json_response({"shutdown": "graceful" if graceful else "now"})
