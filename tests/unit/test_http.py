"""/metrics negotiates its format: OpenMetrics when the scraper asks, plain text otherwise.
A real HttpServer on a free port of its own, a real HTTP client."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from stream.http import Check, HttpServer


@pytest.fixture
def server() -> Iterator[HttpServer]:
    registry = CollectorRegistry()
    Counter("stream_demo", "A counter.", registry=registry).inc(3)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    http = HttpServer(
        "127.0.0.1",
        0,
        registry,
        loop=loop,
        liveness=lambda: Check(True, "ok"),
        readiness=lambda: Check(True, "ok"),
    )
    http.start()
    try:
        yield http
    finally:
        http.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def get(port: int, accept: str | None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        return answer.headers["Content-Type"], answer.read().decode()


OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def test_openmetrics_when_the_scraper_asks(server: HttpServer) -> None:
    content_type, body = get(server.port, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert "stream_demo_total 3.0" in body
    assert body.endswith("# EOF\n")  # OpenMetrics ends every exposition with EOF


@pytest.mark.parametrize("accept", [None, "text/plain", "*/*"])
def test_plain_text_otherwise(server: HttpServer, accept: str | None) -> None:
    content_type, body = get(server.port, accept)
    assert content_type.startswith("text/plain")
    assert "stream_demo_total 3.0" in body
    assert "# EOF" not in body
