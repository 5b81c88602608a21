"""A small HTTP gate in front of the real Schema Registry, for the tests of its answers.

It forwards every request to the real registry and counts them by path, so a test can
say how many lookups the service made. For the few schema ids a test names it answers
itself instead, with what the real registry cannot be made to say: a 403 or 422, a
body that is not JSON or holds no schema, a 503, an endless body, a redirect (its
status, and the URL it points to as the body). That is the only
stand-in: every other answer (schemas, 404s) is the real registry's.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

ENDLESS = -1  # a canned status: 200 with a body that never ends (until the client leaves)
_PIECE = b" " * (64 << 10)


@dataclass
class Gate:
    """The gate's URL (use it as the registry URL), what it saw, and its canned answers."""

    url: str
    canned: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    endless_sent: list[int] = field(default_factory=list)  # bytes sent per endless answer

    def lookups(self, schema_id: int) -> int:
        """GET requests for this schema id that reached the gate."""
        return self.requests[f"GET /schemas/ids/{schema_id}"]


@contextlib.contextmanager
def registry_gate(upstream: str) -> Iterator[Gate]:
    """A gate on a free loopback port forwarding to ``upstream`` (the registry's base
    URL); stopped at the end."""
    gate = Gate("")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _handle(self) -> None:
            with lock:
                gate.requests[f"{self.command} {self.path}"] += 1
            tail = self.path.rsplit("/", 1)[-1]
            if self.path.startswith("/schemas/ids/") and tail.isdigit():
                canned = gate.canned.get(int(tail))
                if canned is not None:
                    self._canned(*canned)
                    return
            self._forward()

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
            request = urllib.request.Request(  # noqa: S310 - the test's own registry
                upstream + self.path, data=body, method=self.command, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    self._answer(answer.status, answer.read())
            except urllib.error.HTTPError as error:
                self._answer(error.code, error.read())

        def _canned(self, status: int, body: bytes) -> None:
            if 300 <= status < 400:  # a redirect to the URL in ``body``
                self.send_response(status)
                self.send_header("Location", body.decode())
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if status != ENDLESS:
                self._answer(status, body)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")  # no length: the body ends when we stop
            self.end_headers()
            sent = 0
            try:
                while sent < (1 << 30):  # 1 GiB at most, were nothing to stop us
                    self.wfile.write(_PIECE)
                    sent += len(_PIECE)
            except OSError:
                pass  # the client has gone: what we wrote is what it could have read
            with lock:
                gate.endless_sent.append(sent)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        gate.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield gate
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
