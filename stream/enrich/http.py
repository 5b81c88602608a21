"""One GET through one aiohttp session: the HTTP edge of the enrichment stage.

The session has one connection pool bounded at the stage's concurrency (so no more
sockets than lookups in flight) and keeps connections alive between lookups. An
attempt turns the response into an ``Attempt``; it never raises for what a server or
the network does. Timeouts are the stage's (one per attempt, around this call).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp
import orjson

from stream import __version__
from stream.enrich.outcome import Attempt, Failed, Found, Missing, Retry
from stream.enrich.retry import Verdict, classify_status, parse_retry_after

MAX_BODY = 1 << 20  # bytes of one answer; more is a failure, not a memory hazard
_SNIPPET = 200


class HttpLookup:
    def __init__(
        self, limit: int, max_body: int = MAX_BODY, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self.max_body = max_body
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=self.limit)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # the stage times each attempt
            headers={"Accept": "application/json", "User-Agent": f"stream/{__version__}"},
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str) -> Attempt:
        session = self._session
        if session is None:
            raise RuntimeError("HttpLookup.get() before start()")
        try:
            async with session.get(url) as response:
                verdict = classify_status(response.status)
                body = await self._read(response)
                retry_after = response.headers.get("Retry-After")
        except aiohttp.InvalidURL as exc:
            return Failed(f"invalid URL {exc}", "invalid_url")
        except _TooLarge:
            return Failed(f"the answer from {url} is over {self.max_body} bytes", "invalid_body")
        except (aiohttp.ClientError, OSError) as exc:
            return Retry(f"{type(exc).__name__}: {exc} ({url})", "connection_error")
        status = f"HTTP {response.status} from {url}"
        match verdict:
            case Verdict.OK:
                try:
                    orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    return Failed(f"{status}: the answer is not JSON ({exc})", "invalid_body")
                return Found(body)
            case Verdict.MISSING:
                return Missing(status)
            case Verdict.RETRY:
                label = "throttled" if response.status == 429 else "server_error"
                wait = parse_retry_after(retry_after, self._clock())
                return Retry(f"{status}{_snippet(body)}", label, wait)
            case _:
                return Failed(f"{status}{_snippet(body)}", "client_error")

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        length = response.content_length
        if length is not None:
            if length > self.max_body:
                raise _TooLarge
            return await response.read()  # the usual case: one read, no chunk loop
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)


class _TooLarge(Exception):
    pass


def _snippet(body: bytes) -> str:
    text = body[:_SNIPPET].decode("utf-8", errors="replace").strip()
    return f": {text}" if text else ""
