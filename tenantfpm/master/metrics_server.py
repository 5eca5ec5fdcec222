"""metrics_listen: HTTP `/metrics` (OpenMetrics or Prometheus text, as the scraper asks)
and `/status` (the status JSON), for monitoring that should not hold the control socket."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from tenantfpm import metrics
from tenantfpm.config.rules import parse_listen

if TYPE_CHECKING:
    from tenantfpm.master.arbiter import Master


class MetricsServer:
    def __init__(self, master: Master, listen: str) -> None:
        self.master = master
        self.address = parse_listen(listen)
        self.registry = metrics.registry(self.statuses)
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/status", self.status)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)

    def statuses(self) -> list[dict[str, Any]]:
        docs = [p.status() for p in self.master.pools.values()]
        return docs + [{"name": n, "state": "failed", "error": e}
                       for n, e in self.master.broken.items()]

    async def start(self) -> None:
        await self.runner.setup()
        a = self.address
        if a.is_unix:
            assert a.path is not None
            if os.path.exists(a.path):
                os.unlink(a.path)
            await web.UnixSite(self.runner, a.path).start()
        else:
            await web.TCPSite(self.runner, a.host, a.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def status(self, request: web.Request) -> web.Response:
        name = request.query.get("name") or request.query.get("pool")
        if name is None:
            return web.json_response(self.statuses())
        pool = self.master.pools.get(name)
        if pool is None:
            return web.json_response({"error": f"no tenant named {name!r}"}, status=404)
        return web.json_response(pool.status(full="full" in request.query))
