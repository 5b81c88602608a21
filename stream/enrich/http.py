"""One GET through one aiohttp session: the HTTP edge of the enrichment stage.

The session has one connection pool bounded at the stage's concurrency (so no more
sockets than lookups in flight) and keeps connections alive between lookups. An
attempt turns the response into an ``Attempt``; it never raises for what a server or
the network does. Timeouts are the stage's (one per attempt, around this call).

What a server sends is bounded while it is read: the body, decompressed here and not by
the client, is at most ``max_body`` bytes (``stream.enrich.body``). Redirects are
followed by this module, not the client: with ``redirects="same-origin"`` (the default)
up to ``MAX_REDIRECTS`` hops that stay on the template's scheme, host and port; a hop
to another origin, or any hop with ``redirects="none"``, fails the lookup. Every
message passes through ``redact``, so credentials in the template never leave.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import aiohttp
import orjson
from yarl import URL

from stream import __version__
from stream.enrich.body import ACCEPT_ENCODING, BadEncoding, TooLarge, read_bounded
from stream.enrich.outcome import Attempt, Failed, Found, Missing, Retry
from stream.enrich.retry import Verdict, classify_status, parse_retry_after

MAX_BODY = 1 << 20  # bytes of one answer; more is a failure, not a memory hazard
MAX_REDIRECTS = 5
REDIRECTS = frozenset((301, 302, 303, 307, 308))
Redirects = Literal["same-origin", "none"]
_SNIPPET = 200


class HttpLookup:
    def __init__(
        self,
        limit: int,
        max_body: int = MAX_BODY,
        clock: Callable[[], float] = time.time,
        *,
        redirects: Redirects = "same-origin",
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.limit = limit
        self.max_body = max_body
        self.redirects = redirects
        self._redact = redact
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=self.limit)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # the stage times each attempt
            headers={
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
                "User-Agent": f"stream/{__version__}",
            },
            raise_for_status=False,
            auto_decompress=False,  # stream.enrich.body decompresses, bounded
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str) -> Attempt:
        """One lookup: the answer, a miss, a failure, or a failure worth retrying."""
        attempt = await self._get(url)
        return _redacted(attempt, self._redact)

    async def _get(self, url: str) -> Attempt:
        session = self._session
        if session is None:
            raise RuntimeError("HttpLookup.get() before start()")
        try:
            target = URL(url)
        except ValueError as exc:
            return Failed(f"invalid URL {url} ({exc})", "invalid_url")
        origin = _origin(target)
        status = 0
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with session.get(target, allow_redirects=False) as response:
                    status = response.status
                    location = response.headers.get("Location")
                    if status not in REDIRECTS or location is None:
                        verdict = classify_status(status)
                        body = await read_bounded(
                            response.content.iter_chunked(64 * 1024),
                            response.headers.get("Content-Encoding", ""),
                            response.content_length,
                            self.max_body,
                        )
                        retry_after = response.headers.get("Retry-After")
                        return self._answer(status, url, verdict, body, retry_after)
            except aiohttp.InvalidURL as exc:
                return Failed(f"invalid URL {exc}", "invalid_url")
            except TooLarge:
                return Failed(
                    f"the answer from {url} is over {self.max_body} bytes", "invalid_body"
                )
            except BadEncoding as exc:
                return Failed(f"HTTP {status} from {url}: {exc}", "invalid_body")
            except (aiohttp.ClientError, OSError) as exc:
                return Retry(f"{type(exc).__name__}: {exc} ({url})", "connection_error")
            hop = self._follow(status, url, target, origin, location)
            if isinstance(hop, Failed):
                return hop
            target = hop
        return Failed(f"more than {MAX_REDIRECTS} redirects from {url}", "redirect_refused")

    def _follow(
        self, status: int, url: str, current: URL, origin: str, location: str
    ) -> URL | Failed:
        """The next hop of a redirect from ``current`` (on the way from ``url``), or why
        it is not followed."""
        if self.redirects == "none":
            return Failed(
                f"HTTP {status} from {url}: a redirect, not followed (--enrich-redirects none)",
                "redirect_refused",
            )
        try:
            target = current.join(URL(location))
        except ValueError:
            return Failed(f"HTTP {status} from {url}: an unreadable Location", "redirect_refused")
        if _origin(target) != origin:
            return Failed(
                f"HTTP {status} from {url}: a redirect to another origin "
                f"({_origin(target)[:100]}), not followed",
                "redirect_refused",
            )
        return target

    def _answer(
        self, code: int, url: str, verdict: Verdict, body: bytes, retry_after: str | None
    ) -> Attempt:
        status = f"HTTP {code} from {url}"
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
                label = "throttled" if code == 429 else "server_error"
                wait = parse_retry_after(retry_after, self._clock())
                return Retry(f"{status}{_snippet(body)}", label, wait)
            case _:
                return Failed(f"{status}{_snippet(body)}", "client_error")


def _origin(url: URL) -> str:
    """Scheme, host and port: what a record or a redirect must not change."""
    return f"{url.scheme}://{url.host}:{url.explicit_port or url.port}"


def _redacted(attempt: Attempt, redact: Callable[[str], str]) -> Attempt:
    match attempt:
        case Found():
            return attempt
        case Missing(message, label):
            return Missing(redact(message), label)
        case Failed(message, label):
            return Failed(redact(message), label)
        case Retry(message, label, wait):
            return Retry(redact(message), label, wait)


def _snippet(body: bytes) -> str:
    text = body[:_SNIPPET].decode("utf-8", errors="replace").strip()
    return f": {text}" if text else ""
