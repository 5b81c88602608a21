"""A real aiohttp web server for the enrichment tests: ``GET /sensors/{id}`` (and
``/tenants/{tenant}/sensors/{id}``) answers ``{"id": id, "n": <request number for that
id>}`` unless a test gives it another ``respond``. It counts requests per id and the
requests it is serving at once, keeps every request's path as sent (``paths``) and its
Authorization header, and can be stopped and started again on the same port."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

Respond = Callable[[str, int], Awaitable[web.StreamResponse]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def answer(sensor_id: str, n: int) -> web.StreamResponse:
    return web.json_response({"id": sensor_id, "n": n})


class MetaServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.respond: Respond = answer
        self.requests: Counter[str] = Counter()
        self.paths: list[str] = []  # every request's path and query, as sent, found or not
        self.authorizations: list[str | None] = []
        self.times: dict[str, list[float]] = {}
        self.active = 0
        self.max_active = 0
        self._runner: web.AppRunner | None = None

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def url(self, path: str = "/sensors/{sensor_id}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/sensors/{sensor_id}", self._handle)
        app.router.add_get("/tenants/{tenant}/sensors/{sensor_id}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        self.authorizations.append(request.headers.get("Authorization"))
        return await handler(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sensor_id = request.match_info["sensor_id"]
        self.requests[sensor_id] += 1
        self.times.setdefault(sensor_id, []).append(time.monotonic())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self.respond(sensor_id, self.requests[sensor_id])
        finally:
            self.active -= 1


def delayed(seconds: float, respond: Respond = answer) -> Respond:
    async def slow(sensor_id: str, n: int) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await respond(sensor_id, n)

    return slow
