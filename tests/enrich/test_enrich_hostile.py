"""Lookups a record could steer, and answers that could exhaust memory, against the real
aiohttp web server of tests/enrich/server.py (issue 20, item 4): values that would fold a
path segment away, values that make the URL too long, a gzip bomb, redirects to another
origin, the cache's byte bound, and credentials in the template."""

from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from stream.config import ConfigError, RunSettings, load
from stream.enrich.outcome import ENRICH_FAILED, ENRICH_REFUSED, EnrichResult
from stream.enrich.retry import RetryPolicy
from stream.enrich.stage import Enricher
from stream.metrics import EnrichMetrics
from stream.url_template import UrlTemplate
from tests.enrich.server import MetaServer, answer

FAST = RetryPolicy(retries=1, base=0.01, cap=0.05)
TENANTS = "/tenants/{tenant}/sensors/{sensor_id}"


@pytest.fixture
async def meta() -> AsyncIterator[MetaServer]:
    server = MetaServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Enricher]]:
    made: list[Enricher] = []

    def build(url: str, **options: object) -> Enricher:
        options.setdefault("policy", FAST)
        enricher = Enricher(
            metrics=EnrichMetrics(CollectorRegistry()),
            url=UrlTemplate.parse(url),
            **options,  # type: ignore[arg-type]
        )
        made.append(enricher)
        return enricher

    yield build
    for enricher in made:
        await enricher.close()


def records(*fields: dict[str, object]) -> tuple[list[bytes | None], list[bytes | None]]:
    keys: list[bytes | None] = [b"k"] * len(fields)
    return keys, [orjson.dumps(f) for f in fields]


def answers(result: EnrichResult) -> list[object]:
    return [None if e is None else orjson.loads(e) for e in result.enrichment]


def sample(enricher: Enricher, name: str, **labels: str) -> float:
    value = enricher.metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


# ---- a record never changes the request's origin or the path's shape ------------------------


async def test_dot_segments_and_empty_values_are_refused_not_sent(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    """With ``/tenants/{tenant}/sensors/{sensor_id}``, a tenant of ``..`` would send the
    lookup to ``/sensors/{id}`` (the client folds dot segments), ``.`` and the empty
    string change the path too: those records are dead letters (enrich_refused), no
    request leaves for them, and every request the server saw has the template's shape.
    Values that only look like dots (``%2E%2E``, ``...``) stay inside their segment."""
    enricher = make(meta.url(TENANTS))
    await enricher.start()
    result = await enricher.enrich(
        *records(
            {"tenant": "t1", "sensor_id": "a"},
            {"tenant": "..", "sensor_id": "b"},
            {"tenant": ".", "sensor_id": "c"},
            {"tenant": "", "sensor_id": "d"},
            {"tenant": "t1", "sensor_id": ".."},
            {"tenant": "%2E%2E", "sensor_id": "e"},
            {"tenant": "...", "sensor_id": "f"},
        )
    )
    assert [(i, r) for i, r, _ in result.errors] == [
        (1, ENRICH_REFUSED),
        (2, ENRICH_REFUSED),
        (3, ENRICH_REFUSED),
        (4, ENRICH_REFUSED),
    ]
    assert "field 'tenant' would make a path segment" in result.errors[0][2]
    assert answers(result)[0] == {"id": "a", "n": 1}
    assert sorted(meta.paths) == [
        "/tenants/%252E%252E/sensors/e",
        "/tenants/.../sensors/f",
        "/tenants/t1/sensors/a",
    ]
    assert sample(enricher, "stream_enrich_records_total", result="refused") == 4


def test_a_placeholder_in_the_host_is_refused_at_start() -> None:
    """A template whose host (or port, or user information) a record would fill is a
    configuration error: one line at start, not a lookup to wherever a record says."""
    for url in ("http://{tenant}.meta/x", "http://meta:{port}/x", "http://meta{key}/x"):
        with pytest.raises(ConfigError, match="scheme or host"):
            load(RunSettings, {"enrich_url": url}, environ={})


async def test_a_value_that_makes_the_url_too_long_is_refused(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    """The URL is bounded (``--enrich-max-url-length``, 2048 by default): a 3,000-character
    sensor id, or 1,000 characters that quote to 6,000 (``é`` is ``%C3%A9``), are dead
    letters (enrich_refused); no request leaves for them and the cache keeps no key for
    them. A value within the bound is looked up."""
    enricher = make(meta.url())
    await enricher.start()
    result = await enricher.enrich(
        *records({"sensor_id": "x" * 3000}, {"sensor_id": "é" * 1000}, {"sensor_id": "y" * 1500})
    )
    assert [(i, r) for i, r, _ in result.errors] == [(0, ENRICH_REFUSED), (1, ENRICH_REFUSED)]
    assert "over 2048" in result.errors[0][2]
    assert "over 2048" in result.errors[1][2]
    assert meta.requests == {"y" * 1500: 1}
    assert len(enricher.cache) == 1


# ---- answers are bounded while they are read ---------------------------------------------------


async def test_a_gzip_bomb_is_cut_at_the_body_limit(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    """A 20 MB JSON answer gzipped to ~20 KB (well under the 1 MiB limit on the wire)
    fails its lookup as over the limit: the limit holds for the decompressed bytes, not
    only the Content-Length. A small gzipped answer still decodes."""
    bomb = gzip.compress(b'{"blob": "' + b"x" * 20_000_000 + b'"}')
    small = gzip.compress(orjson.dumps({"id": "small"}))
    assert len(bomb) < 100_000

    async def gzipped(sensor_id: str, n: int) -> web.StreamResponse:
        body = bomb if sensor_id == "bomb" else small
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    meta.respond = gzipped
    enricher = make(meta.url())
    await enricher.start()
    result = await enricher.enrich(*records({"sensor_id": "bomb"}, {"sensor_id": "small"}))
    assert result.errors == [
        (0, ENRICH_FAILED, f"the answer from {meta.url('/sensors/bomb')} is over 1048576 bytes")
    ]
    assert answers(result)[1] == {"id": "small"}
    assert meta.requests["bomb"] == 1  # not retried


async def test_an_unknown_content_encoding_fails_the_lookup(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    async def brotli(sensor_id: str, n: int) -> web.StreamResponse:
        return web.Response(body=b"\x8b\x00", headers={"Content-Encoding": "br"})

    meta.respond = brotli
    enricher = make(meta.url())
    await enricher.start()
    result = await enricher.enrich(*records({"sensor_id": "a"}))
    assert [(i, r) for i, r, _ in result.errors] == [(0, ENRICH_FAILED)]
    assert "Content-Encoding 'br'" in result.errors[0][2]


# ---- redirects ----------------------------------------------------------------------------------


async def test_a_redirect_to_another_origin_is_not_followed(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    """A 302 to another server (another port: another origin) fails the lookup without a
    request to it; redirects on the same origin are followed, up to 5; with
    ``redirects="none"`` none is."""
    other = MetaServer()
    await other.start()
    try:

        async def moved(sensor_id: str, n: int) -> web.StreamResponse:
            if sensor_id == "away":
                return web.Response(status=302, headers={"Location": other.url("/sensors/x")})
            if sensor_id == "here":
                return web.Response(status=301, headers={"Location": "/sensors/here-now"})
            if sensor_id == "twice":  # relative to where the first hop went
                return web.Response(status=307, headers={"Location": "/tenants/x/sensors/twice-1"})
            if sensor_id == "twice-1":
                return web.Response(status=308, headers={"Location": "twice-2"})
            if sensor_id == "loop":
                return web.Response(status=302, headers={"Location": "/sensors/loop"})
            return await answer(sensor_id, n)

        meta.respond = moved
        following = make(meta.url())
        strict = make(meta.url(), redirects="none")
        await following.start()
        await strict.start()
        keys, values = records({"sensor_id": "away"}, {"sensor_id": "here"})
        result = await following.enrich(keys, values)
        assert [(i, r) for i, r, _ in result.errors] == [(0, ENRICH_FAILED)]
        assert "a redirect to another origin" in result.errors[0][2]
        assert answers(result)[1] == {"id": "here-now", "n": 1}
        hops = await following.enrich(*records({"sensor_id": "twice"}, {"sensor_id": "loop"}))
        assert answers(hops)[0] == {"id": "twice-2", "n": 1}
        assert "/tenants/x/sensors/twice-2" in meta.paths
        assert [(i, r) for i, r, _ in hops.errors] == [(1, ENRICH_FAILED)]
        assert "more than 5 redirects" in hops.errors[0][2]
        assert meta.requests["loop"] == 6  # the request and 5 redirects, not for ever
        refused = await strict.enrich(keys, values)
        assert [(i, r) for i, r, _ in refused.errors] == [(0, ENRICH_FAILED), (1, ENRICH_FAILED)]
        assert "not followed (--enrich-redirects none)" in refused.errors[1][2]
        assert other.paths == []  # the other origin never heard from us
        outcome = "redirect_refused"
        assert sample(strict, "stream_enrich_requests_total", outcome=outcome) == 2
    finally:
        await other.stop()


# ---- the cache is bounded in bytes ----------------------------------------------------------


async def test_the_cache_is_bounded_in_bytes_and_shows_them(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    """Answers of ~10 KB, 50 distinct sensors, a cache of 100,000 bytes (and room for
    10,000 entries): the cache never holds more than its bytes, the least recently used
    go first, and ``stream_enrich_cache_bytes`` shows what it holds (keys included)."""

    async def fat(sensor_id: str, n: int) -> web.StreamResponse:
        return web.json_response({"id": sensor_id, "pad": "p" * 10_000})

    meta.respond = fat
    enricher = make(meta.url(), cache_bytes=100_000)
    await enricher.start()
    for i in range(50):
        result = await enricher.enrich(*records({"sensor_id": f"s-{i}"}))
        assert result.errors == []
        held = sample(enricher, "stream_enrich_cache_bytes")
        assert held == enricher.cache.bytes
        assert 0 < held <= 100_000
    assert 5 <= len(enricher.cache) <= 10
    assert sample(enricher, "stream_enrich_cache_bytes") > 10_000 * len(enricher.cache)
    # the newest answers stayed; the oldest went
    last = await enricher.enrich(*records({"sensor_id": "s-49"}, {"sensor_id": "s-0"}))
    assert answers(last)[0] == {"id": "s-49", "pad": "p" * 10_000}
    assert meta.requests["s-49"] == 1
    assert meta.requests["s-0"] == 2


# ---- credentials in the template are secrets -----------------------------------------------


async def test_credentials_in_the_template_never_reach_a_dead_letter_or_a_log(
    meta: MetaServer, make: Callable[..., Enricher], caplog: pytest.LogCaptureFixture
) -> None:
    """``http://reader:s3cret@host/...?token=t0ken``: the credentials go to the server
    (the user information as Basic auth), but no message of a failed lookup (which
    becomes the dead letter's ``stream.error.message``), no log line, no settings repr
    and no configuration error shows them."""

    async def refuse(sensor_id: str, n: int) -> web.StreamResponse:
        if sensor_id == "ok":
            return await answer(sensor_id, n)
        return web.Response(status=403, text="forbidden")

    meta.respond = refuse
    url = f"http://reader:s3cret@127.0.0.1:{meta.port}/sensors/{{sensor_id}}?token=t0ken&v=1"
    down = MetaServer()  # never started: connection refused
    down_url = url.replace(str(meta.port), str(down.port))
    caplog.set_level(logging.DEBUG)
    enricher = make(url)
    unreachable = make(down_url, policy=RetryPolicy(retries=0))
    await enricher.start()
    await unreachable.start()
    result = await enricher.enrich(*records({"sensor_id": "ok"}, {"sensor_id": "no"}))
    failed = await unreachable.enrich(*records({"sensor_id": "a"}))
    assert answers(result)[0] == {"id": "ok", "n": 1}
    assert meta.paths[0] == "/sensors/ok?token=t0ken&v=1"
    assert meta.authorizations[0] is not None  # Basic auth from the user information
    messages = [m for _, _, m in result.errors + failed.errors]
    assert len(messages) == 2
    assert "HTTP 403" in messages[0]
    assert "ClientConnectorError" in messages[1]
    settings = load(RunSettings, {"enrich_url": url}, environ={})
    with pytest.raises(ConfigError) as bad:
        load(RunSettings, {"enrich_url": url.replace("{sensor_id}", "{sensor_id")}, environ={})
    with pytest.raises(ConfigError) as overlong:
        load(RunSettings, {"enrich_url": url, "enrich_max_url_length": "20"}, environ={}).resolve()
    ours = [r for r in caplog.records if r.name != "aiohttp.access"]  # not the test server's
    logged = "\n".join(f"{r.getMessage()} {r.exc_info}" for r in ours)
    shown = [*messages, logged, repr(settings), str(bad.value), str(overlong.value)]
    for text in shown:
        assert "s3cret" not in text, text
        assert "t0ken" not in text, text
    assert "***" in messages[0]
    assert "v=1" in messages[0]  # what is not a credential is still shown
