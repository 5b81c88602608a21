"""The service's HTTP endpoints: /metrics, /healthz (liveness), /readyz (readiness).

/metrics answers in the OpenMetrics format when the scraper's Accept header asks for it
(as Prometheus does), in the plain text format otherwise.

A small threaded server of its own, so that a scrape never waits on the event
loop. Health questions, though, are answered *by* the event loop: the handler
asks the loop and waits at most a second, so a blocked loop reads as not alive.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

LOOP_ANSWER_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Check:
    """A health answer: ok or not, and why, as a small JSON object."""

    ok: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> bytes:
        return orjson.dumps({"ok": self.ok, "reason": self.reason, **self.details})


class HttpServer:
    """Serves metrics from a registry and health checks computed on the event loop."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        loop: asyncio.AbstractEventLoop,
        liveness: Callable[[], Check],
        readiness: Callable[[], Check],
    ) -> None:
        self._registry = registry
        self._loop = loop
        self._checks = {"/healthz": liveness, "/readyz": readiness}
        handler = self._handler_class()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # close() waits for one poll, on the event loop
            name="stream-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _ask_loop(self, check: Callable[[], Check]) -> Check:
        async def ask() -> Check:
            return check()

        try:
            future = asyncio.run_coroutine_threadsafe(ask(), self._loop)
        except RuntimeError:
            return Check(False, "the event loop is closed")
        try:
            return future.result(LOOP_ANSWER_TIMEOUT)
        except FutureTimeout:
            future.cancel()
            return Check(False, f"the event loop did not answer within {LOOP_ANSWER_TIMEOUT:g}s")

    def _answer(self, target: str, accept: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a request of ``target``."""
        path = target.split("?", 1)[0]
        if path == "/metrics":
            # OpenMetrics when the scraper asks for it (Accept), else plain text.
            encode, content_type = choose_encoder(accept)
            return 200, content_type, encode(self._registry)
        if path in self._checks:
            result = self._ask_loop(self._checks[path])
            return 200 if result.ok else 503, "application/json", result.body()
        if path == "/":
            return 200, "text/plain; charset=utf-8", b"stream: /metrics /healthz /readyz\n"
        return 404, "text/plain; charset=utf-8", b"not found\n"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(*server._answer(self.path, self.headers.get("Accept") or ""))

            def do_HEAD(self) -> None:
                """As GET, without the body (curl -I, load balancers' checks)."""
                self._send(*server._answer(self.path, self.headers.get("Accept") or ""), head=True)

            def _send(
                self, status: int, content_type: str, body: bytes, *, head: bool = False
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        return Handler
