"""metrics_listen: HTTP `/metrics` (Prometheus' text format, php-fpm_exporter's names:
see metrics.py) and `/status` (the status JSON), for monitoring that should not hold
the control socket. It shows every tenant's running URIs, so only root and the
monitoring group (`status_listen_group`) may read it: a unix socket is 0660 in that
group; a TCP one is fenced by the master's firewall (netguard.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.exposition import generate_latest

from tenantfpm import fdguard, metrics
from tenantfpm.config.rules import parse_listen

if TYPE_CHECKING:
    from tenantfpm.master.arbiter import Master

# what generate_latest writes and php-fpm_exporter serves
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    def __init__(self, master: Master, listen: str, group: str = "root") -> None:
        self.master = master
        self.group = group
        self.address = parse_listen(listen)
        self.registry = metrics.registry(self.statuses, exporter_names=True)
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
            await web.SockSite(self.runner,
                               fdguard.unix_listener(a.path, 0o660, group=self.group)).start()
        else:
            await web.TCPSite(self.runner, a.host, a.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def metrics(self, request: web.Request) -> web.Response:
        # the text format whatever the scraper prefers: OpenMetrics would rename the
        # exporter's counters (`_total`), which its dashboards do not query
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": TEXT_FORMAT})

    async def status(self, request: web.Request) -> web.Response:
        name = request.query.get("name") or request.query.get("pool")
        if name is None:
            return web.json_response(self.statuses())
        pool = self.master.pools.get(name)
        if pool is None:
            return web.json_response({"error": f"no tenant named {name!r}"}, status=404)
        return web.json_response(pool.status(full="full" in request.query))
