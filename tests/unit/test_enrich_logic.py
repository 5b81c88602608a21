"""The enrichment stage's pure parts: URL template, cache, single-flight, retry policy,
combining a batch's results, and the worker-side merge of the answers."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from stream.config import ConfigError, RunSettings, load
from stream.enrich.body import BadEncoding, TooLarge, read_bounded
from stream.enrich.cache import SingleFlight, TtlCache
from stream.enrich.outcome import ENRICH_FAILED, EnrichResult, Found
from stream.enrich.retry import RetryPolicy, Verdict, classify_status, parse_retry_after
from stream.url_template import TemplateError, UnsafeValue, UrlTemplate
from stream.worker import BatchResult, process_batch


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- URL template ---------------------------------------------------------------------------


def test_template_renders_record_fields_and_key() -> None:
    t = UrlTemplate.parse("http://meta:8080/sensors/{sensor_id}/seq/{seq}?k={key}")
    assert t.fields == {"sensor_id", "seq"}
    assert t.needs_record
    url = t.render(b"k-1", {"sensor_id": "s-7", "seq": 12})
    assert url == "http://meta:8080/sensors/s-7/seq/12?k=k-1"


def test_template_quotes_values_whole() -> None:
    t = UrlTemplate.parse("http://meta/sensors/{sensor_id}")
    assert t.render(None, {"sensor_id": "a/b c?d&e=%é"}) == (
        "http://meta/sensors/a%2Fb%20c%3Fd%26e%3D%25%C3%A9"
    )


def test_key_only_template_needs_no_record() -> None:
    t = UrlTemplate.parse("https://meta/sensors/{key}")
    assert not t.needs_record
    assert t.render(b"s/1", None) == "https://meta/sensors/s%2F1"


@pytest.mark.parametrize(
    ("key", "record", "words"),
    [
        (b"k", {"other": 1}, "the record has no field 'sensor_id'"),
        (b"k", None, "not a JSON object"),
        (b"k", {"sensor_id": None}, "is null"),
        (b"k", {"sensor_id": {"a": 1}}, "is dict"),
        (b"k", {"sensor_id": True}, "is bool"),
    ],
)
def test_template_failures_say_what_is_missing(
    key: bytes, record: dict[str, object] | None, words: str
) -> None:
    t = UrlTemplate.parse("http://meta/sensors/{sensor_id}")
    with pytest.raises(TemplateError, match=words):
        t.render(key, record)


def test_template_key_failures() -> None:
    t = UrlTemplate.parse("http://meta/{key}")
    with pytest.raises(TemplateError, match="has no key"):
        t.render(None, None)
    with pytest.raises(TemplateError, match="not UTF-8"):
        t.render(b"\xff\xfe", None)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("meta/sensors/{id}", "http:// or https://"),
        ("ftp://meta/{id}", "http:// or https://"),
        ("http://meta/{id", "bad placeholder"),
        ("http://meta/{0}", "not a field name"),
        ("http://meta/{a.b}", "not a field name"),
        ("http://meta/{id:>5}", "takes no format"),
    ],
)
def test_bad_templates(text: str, words: str) -> None:
    with pytest.raises(TemplateError, match=words):
        UrlTemplate.parse(text)


@given(st.text(max_size=30) | st.sampled_from(["", ".", "..", "%2E", "%2e%2E", "./..", "..."]))
def test_any_field_value_stays_in_its_path_segment(value: str) -> None:
    """Whatever the value, the URL the HTTP client sends (yarl, as aiohttp parses it:
    dot segments folded, %2E decoded) has the template's origin and path shape, or the
    value is refused."""
    template = UrlTemplate.parse("http://meta/s/{id}/x")
    try:
        url = template.render(None, {"id": value})
    except UnsafeValue:
        assert value in ("", ".", "..")
        return
    assert url.startswith("http://meta/s/")
    assert url.endswith("/x")
    assert url.count("/") == 5  # nothing in the value adds a segment
    assert "?" not in url
    assert "#" not in url
    sent = URL(url)
    assert sent.origin() == URL("http://meta").origin()
    segments = sent.raw_path.split("/")
    assert len(segments) == 4
    assert segments[:2] == ["", "s"]
    assert segments[3] == "x"


@pytest.mark.parametrize(
    ("template", "fields"),
    [
        ("http://meta/t/{a}{b}/x", {"a": ".", "b": "."}),
        ("http://meta/t/{a}{b}/x", {"a": "", "b": ""}),
        ("http://meta/t/.{a}/x", {"a": "."}),
        ("http://meta/t/%2E{a}/x", {"a": "."}),
        ("http://meta/{a}", {"a": ".."}),
        ("http://meta/t/{a}?q={b}", {"a": "", "b": "v"}),
    ],
)
def test_values_that_fold_a_path_segment_are_refused(template: str, fields: dict[str, str]) -> None:
    with pytest.raises(UnsafeValue, match="changes the path's shape"):
        UrlTemplate.parse(template).render(None, fields)


def test_values_outside_the_path_may_be_dots_or_empty() -> None:
    t = UrlTemplate.parse("http://meta/t/x{a}/y?q={b}&r={c}#{d}")
    assert t.render(None, {"a": "", "b": "..", "c": "", "d": "."}) == (
        "http://meta/t/x/y?q=..&r=#."
    )


def test_the_url_length_is_bounded_after_quoting() -> None:
    t = UrlTemplate.parse("http://meta/s/{id}", max_length=40)
    assert t.render(None, {"id": "a" * 26}) == "http://meta/s/" + "a" * 26  # 40 characters
    with pytest.raises(UnsafeValue, match="41 characters, over 40"):
        t.render(None, {"id": "a" * 27})
    with pytest.raises(UnsafeValue, match="over 40"):
        t.render(None, {"id": "é" * 5})  # 5 characters, 30 once quoted
    with pytest.raises(UnsafeValue, match=r"values .* over 40"):
        t.texts(None, {"id": "b" * 41})  # refused before the URL is built
    with pytest.raises(TemplateError, match="longer than 10 characters"):
        UrlTemplate.parse("http://meta/s/{id}", max_length=10)


def test_credentials_in_the_template_are_redacted() -> None:
    t = UrlTemplate.parse("https://app:p%40ss@meta/s/{id}?api_key=K3Y&Token=T0K&v=2&key={key}")
    assert t.shown == "https://***@meta/s/{id}?api_key=***&Token=***&v=2&key={key}"
    url = t.render(b"k1", {"id": "a"})
    assert t.redact(f"HTTP 500 from {url}") == (
        "HTTP 500 from https://***@meta/s/a?api_key=***&Token=***&v=2&key=k1"
    )
    assert t.redact("p@ss K3Y T0K") == "*** *** ***"  # decoded forms too
    assert "p%40ss" not in repr(t)
    assert UrlTemplate.parse("http://meta/{id}").secrets == ()


# ---- settings --------------------------------------------------------------------------------


def test_enrich_settings_defaults_and_validation() -> None:
    s = load(RunSettings, {}, environ={})
    assert (s.enrich_url, s.enrich, s.enrich_field) == ("", "", "meta")
    assert (s.enrich_concurrency, s.enrich_retries, s.enrich_missing) == (100, 3, "fail")
    s = load(RunSettings, {"enrich_url": "http://meta/{key}"}, environ={})
    assert s.enrich_url == "http://meta/{key}"
    with pytest.raises(ConfigError, match=r"--enrich-url.*http:// or https://"):
        load(RunSettings, {"enrich_url": "meta/{key}"}, environ={})
    with pytest.raises(ConfigError, match="not both"):
        load(RunSettings, {"enrich_url": "http://meta/{key}", "enrich": "m:f"}, environ={})
    with pytest.raises(ConfigError, match="--enrich-missing"):
        load(RunSettings, {"enrich_missing": "ignore"}, environ={})


# ---- cache -----------------------------------------------------------------------------------


def test_cache_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(10, 5.0, clock)
    cache.put("a", 1)
    assert cache.get("a") == (True, 1)
    clock.now += 4.9
    assert cache.get("a") == (True, 1)
    clock.now += 0.1
    assert cache.get("a") == (False, None)
    assert len(cache) == 0


def test_cache_keeps_at_most_size_entries_least_recently_used_out() -> None:
    cache: TtlCache[str, int] = TtlCache(2, 60.0, FakeClock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)  # a is now the most recent
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("b") == (False, None)
    assert cache.get("a") == (True, 1)
    assert cache.get("c") == (True, 3)


def test_cache_put_refreshes_the_ttl() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(2, 5.0, clock)
    cache.put("a", 1)
    clock.now += 4
    cache.put("a", 2)
    clock.now += 4
    assert cache.get("a") == (True, 2)


def test_cache_expire_drops_only_dead_entries() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(10, 5.0, clock)
    cache.put("old", 1)
    clock.now += 3
    cache.put("new", 2)
    clock.now += 2.5
    assert cache.expire() == 1
    assert cache.get("new") == (True, 2)


@pytest.mark.parametrize(("size", "ttl"), [(0, 60.0), (10, 0.0)])
def test_a_disabled_cache_keeps_nothing(size: int, ttl: float) -> None:
    cache: TtlCache[str, int] = TtlCache(size, ttl, FakeClock())
    assert not cache.enabled
    cache.put("a", 1)
    assert cache.get("a") == (False, None)


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 3)), max_size=200))
def test_cache_never_exceeds_its_size_nor_returns_expired(ops: list[tuple[int, float]]) -> None:
    clock = FakeClock()
    cache: TtlCache[int, float] = TtlCache(5, 4.0, clock)
    for key, step in ops:
        clock.now += step
        cache.put(key, clock.now)
        assert len(cache) <= 5
        for probe in range(21):
            hit, put_at = cache.get(probe)
            if hit:
                assert put_at is not None
                assert clock.now - put_at < 4.0


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 60), st.floats(0, 3)), max_size=200))
def test_cache_never_holds_more_bytes_than_its_bound(ops: list[tuple[int, int, float]]) -> None:
    clock = FakeClock()
    cache: TtlCache[int, bytes] = TtlCache(
        10, 4.0, clock, max_bytes=100, weigh=lambda key, value: len(value)
    )
    held: dict[int, bytes] = {}
    for key, size, step in ops:
        clock.now += step
        cache.put(key, b"x" * size)
        cache.expire()
        held = {k: v for k in range(21) if (v := cache.get(k)[1]) is not None}
        assert cache.bytes == sum(len(v) for v in held.values()) <= 100
        assert len(cache) <= 10
        if size <= 100:
            assert held.get(key) == b"x" * size  # the newest entry always fits
        else:
            assert key not in held  # heavier than the whole bound: not kept


def test_cache_bytes_drop_least_recently_used_first() -> None:
    cache: TtlCache[str, bytes] = TtlCache(
        100, 60.0, FakeClock(), max_bytes=30, weigh=lambda key, value: len(key) + len(value)
    )
    cache.put("a", b"x" * 9)
    cache.put("b", b"x" * 9)
    cache.put("c", b"x" * 9)
    assert cache.bytes == 30
    cache.get("a")  # a is used: b is the least recently used now
    cache.put("d", b"x" * 4)
    assert [k for k in "abcd" if cache.get(k)[0]] == ["a", "c", "d"]
    assert cache.bytes == 25
    cache.put("a", b"")  # replacing an entry gives its bytes back
    assert cache.bytes == 16


# ---- reading an answer, bounded ----------------------------------------------------------------


async def chunked(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("", lambda b: b),
        ("identity", lambda b: b),
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
    ],
)
async def test_answers_decode_and_stop_at_the_limit_while_made(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    body = b'{"a": "' + b"x" * 10_000 + b'"}'
    wire = compress(body)
    assert await read_bounded(chunked(wire), encoding, len(wire), 20_000) == body
    assert await read_bounded(chunked(wire), encoding, None, len(body)) == body
    with pytest.raises(TooLarge):
        await read_bounded(chunked(wire), encoding, None, len(body) - 1)


async def test_a_bomb_is_stopped_after_at_most_limit_bytes_made() -> None:
    """One 1 KB chunk of gzip that inflates to 10 MB: the reader gives up having made no
    more than the limit and a byte (counted by decompressing into a bounded buffer)."""
    bomb = gzip.compress(b"\0" * 10_000_000)
    assert len(bomb) < 20_000
    made: list[int] = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self, wbits: int) -> None:
            self._d = real(wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self._d.decompress(data, max_length)
            made.append(len(out))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self._d, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zlib, "decompressobj", Spy)
        with pytest.raises(TooLarge):
            await read_bounded(chunked(bomb, len(bomb)), "gzip", len(bomb), 1 << 20)
    assert sum(made) <= (1 << 20) + 1


async def test_broken_or_unknown_encodings_are_refused() -> None:
    wire = gzip.compress(b'{"a": 1}')
    with pytest.raises(BadEncoding, match="cut short"):
        await read_bounded(chunked(wire[:-12]), "gzip", None, 1000)
    with pytest.raises(BadEncoding, match="broken"):
        await read_bounded(chunked(b"not gzip at all"), "gzip", None, 1000)
    with pytest.raises(BadEncoding, match="'br' is not gzip or deflate"):
        await read_bounded(chunked(wire), "br", None, 1000)
    with pytest.raises(TooLarge):  # Content-Length alone says so: nothing is read
        await read_bounded(chunked(wire), "gzip", 5000, 1000)


# ---- single-flight ---------------------------------------------------------------------------


async def test_single_flight_shares_one_future_until_it_is_done() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    flights.begin("u", future)
    assert flights.get("u") is future
    with pytest.raises(ValueError, match="already in flight"):
        flights.begin("u", asyncio.get_running_loop().create_future())
    future.set_result(7)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert flights.get("u") is None
    assert len(flights) == 0


async def test_single_flight_forgets_a_failed_lookup() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    flights.begin("u", future)
    future.cancel()
    await asyncio.sleep(0)
    assert flights.get("u") is None


# ---- retry policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.OK),
        (204, Verdict.OK),
        (404, Verdict.MISSING),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (400, Verdict.FAIL),
        (401, Verdict.FAIL),
        (410, Verdict.FAIL),
        (301, Verdict.FAIL),
    ],
)
def test_classify_status(status: int, verdict: Verdict) -> None:
    assert classify_status(status) is verdict


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    past = format_datetime(datetime.fromtimestamp(now, UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None


def test_backoff_doubles_within_jitter_bounds_and_is_capped() -> None:
    low = RetryPolicy(base=0.1, cap=1.0, rand=lambda: 0.0)
    high = RetryPolicy(base=0.1, cap=1.0, rand=lambda: 0.999999)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        assert low.delay(attempt) == pytest.approx(ceiling / 2)
        assert high.delay(attempt) == pytest.approx(ceiling, rel=1e-5)


def test_retry_after_is_a_floor_capped_by_max_retry_after() -> None:
    policy = RetryPolicy(base=0.1, cap=1.0, max_retry_after=10.0, rand=lambda: 0.5)
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=0.0) == pytest.approx(0.075)
    assert policy.delay(1, retry_after=3600.0) == 10.0


def test_retry_budget() -> None:
    policy = RetryPolicy(retries=2)
    assert [policy.should_retry(n) for n in (1, 2, 3)] == [True, True, False]
    assert not RetryPolicy(retries=0).should_retry(1)


# ---- a batch's result ------------------------------------------------------------------------


def test_combine_puts_failed_lookups_in_place_of_the_workers_results() -> None:
    values: list[bytes | None] = [b"a", b"b", b"c", b"d"]
    batch = BatchResult([b"A", b"B", None, b"D"], [(2, "schema", "bad")], 0.1, 7)
    enriched = EnrichResult([b"{}", None, None, b"{}"], [(1, ENRICH_FAILED, "HTTP 500")])
    combined = enriched.combine(batch, values)
    assert combined.outputs == [b"A", None, None, b"D"]
    assert combined.errors == [(1, ENRICH_FAILED, "HTTP 500"), (2, "schema", "bad")]
    # a passthrough result (outputs None) is materialised first
    passthrough = BatchResult(None, [(3, "schema", "x")], 0.1, 7)
    also = EnrichResult([None] * 4, [(3, ENRICH_FAILED, "HTTP 404"), (0, ENRICH_FAILED, "t")])
    combined = also.combine(passthrough, values)
    assert combined.outputs == [None, b"b", b"c", None]
    assert combined.errors == [(0, ENRICH_FAILED, "t"), (3, ENRICH_FAILED, "HTTP 404")]
    assert EnrichResult([None] * 4, []).combine(batch, values) is batch


def test_found_is_a_value() -> None:
    assert Found(b"{}") == Found(b"{}")


# ---- the worker merges the answers -----------------------------------------------------------


def test_worker_merges_the_answer_under_the_field() -> None:
    values: list[bytes | None] = [b'{"sensor_id":"a","meta":"old"}', b'{"sensor_id":"b"}', b"[1]"]
    enrichment: list[bytes | None] = [b'{"site":"x"}', None, b'{"site":"z"}']
    result = process_batch("identity", values, 1 << 20, enrichment=enrichment, field="meta")
    assert result.outputs is not None  # an enriched record is not its input
    assert orjson.loads(result.outputs[0] or b"") == {"sensor_id": "a", "meta": {"site": "x"}}
    assert orjson.loads(result.outputs[1] or b"") == {"sensor_id": "b"}
    assert result.outputs[2] is None
    assert result.errors == [
        (2, ENRICH_FAILED, "the record is not a JSON object, so it cannot take 'meta'")
    ]


def test_worker_without_enrichment_stays_passthrough() -> None:
    values: list[bytes | None] = [b'{"a":1}']
    assert process_batch("identity", values, 1 << 20).outputs is None
    assert (
        process_batch("identity", values, 1 << 20, enrichment=[None], field="meta").outputs is None
    )


def test_worker_reports_an_answer_that_is_not_json() -> None:
    result = process_batch("identity", [b'{"a":1}'], 1 << 20, enrichment=[b"{nope"], field="m")
    assert result.errors[0][:2] == (0, ENRICH_FAILED)
    assert "not JSON" in result.errors[0][2]


def test_transform_sees_the_merged_field() -> None:
    record = {"sensor_id": "s", "seq": 1, "ts": 1.0, "values": [1.0, 2.0, 3.0]}
    result = process_batch(
        "tests.unit.test_enrich_logic:site_of",
        [orjson.dumps(record)],
        1 << 20,
        enrichment=[b'{"site":"north"}'],
        field="meta",
    )
    assert result.outputs == [b'"north"']


def site_of(records: list[dict[str, dict[str, str]]]) -> list[str]:
    """A batch transform that reads the enrichment (used by name in a test above)."""
    return [r["meta"]["site"] for r in records]
