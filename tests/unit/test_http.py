"""/metrics negotiates its format: OpenMetrics when the scraper asks, plain text otherwise;
it shows no ``_created`` series; HEAD answers as GET without the body. A real HttpServer
on a free port of its own, a real HTTP client (and a raw socket, to see the wire)."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prometheus_client import CollectorRegistry, Counter

from stream.http import Check, HttpServer
from stream.metrics import Metrics


@pytest.fixture
def server() -> Iterator[HttpServer]:
    registry = CollectorRegistry()
    Counter("stream_demo", "A counter.", registry=registry).inc(3)
    with serve(registry) as http:
        yield http


@contextmanager
def serve(registry: CollectorRegistry, ready: bool = True) -> Iterator[HttpServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    http = HttpServer(
        "127.0.0.1",
        0,
        registry,
        loop=loop,
        liveness=lambda: Check(True, "ok"),
        readiness=lambda: Check(ready, "ok" if ready else "starting"),
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


def raw(port: int, request: bytes) -> tuple[bytes, bytes]:
    """The answer's head and body as they came over the wire (HTTP/1.0: it ends at close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def status_and_length(head: bytes) -> tuple[str, str]:
    lines = head.decode().split("\r\n")
    length = next(line for line in lines if line.lower().startswith("content-length:"))
    return lines[0].split(" ", 2)[1], length.split(":", 1)[1].strip()


def test_the_service_metrics_have_no_created_series() -> None:
    metrics = Metrics("identity", "in", "out", "in.dlq", sinks=("kafka",))
    metrics.consumed.labels("in").inc(5)
    with serve(metrics.registry) as http:
        for accept in (None, OPENMETRICS):
            _, body = get(http.port, accept)
            assert 'stream_messages_consumed_total{topic="in"} 5.0' in body
            created = [line for line in body.splitlines() if "_created" in line]
            assert created == [], created[:3]


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/", "/nothing"])
def test_head_answers_as_get_without_a_body(path: str) -> None:
    """curl -I and load balancers ask with HEAD: same status and length, no body."""
    registry = CollectorRegistry()
    Counter("stream_demo", "A counter.", registry=registry).inc(3)
    with serve(registry, ready=False) as http:
        get_head, get_body = raw(http.port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        head, body = raw(http.port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
        assert get_body, "GET has a body"
        assert body == b""
        assert status_and_length(head) == status_and_length(get_head)
        assert status_and_length(head)[1] == str(len(get_body))
