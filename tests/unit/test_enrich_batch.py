"""The enrichment stage's batch path with its answers in the cache: no server, no pool.

One cache look-up per distinct URL of a batch, one answer object per distinct URL for
the workers, and a batch the cache answers whole handed to the pool in the same step."""

from __future__ import annotations

import pickle
from collections.abc import Hashable

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream.enrich.outcome import Found, Outcome
from stream.enrich.stage import Enricher, enrich_then_process
from stream.metrics import EnrichMetrics
from stream.url_template import UrlTemplate
from stream.worker import BatchResult, Job

URL = "http://meta/sensors/{sensor_id}"


def cached(url: str = URL, answers: dict[str, Outcome] | None = None) -> Enricher:
    """An Enricher whose cache answers every sensor of ``answers`` (never started: a
    lookup it had to send would fail the test)."""
    enricher = Enricher(
        metrics=EnrichMetrics(CollectorRegistry()), url=UrlTemplate.parse(url), cache_size=100
    )
    for sensor, outcome in (answers or {}).items():
        enricher.cache.put(url.replace("{sensor_id}", sensor).replace("{key}", sensor), outcome)
    return enricher


def batch(sensors: list[str]) -> tuple[list[bytes | None], list[bytes | None]]:
    keys: list[bytes | None] = [s.encode() for s in sensors]
    values: list[bytes | None] = [
        orjson.dumps({"sensor_id": s, "seq": n, "ts": 1.0, "values": [1.0, 2.0, 3.0]})
        for n, s in enumerate(sensors)
    ]
    return keys, values


def hits(enricher: Enricher) -> float:
    value = enricher.metrics.registry.get_sample_value("stream_enrich_cache_hits_total")
    assert value is not None
    return value


class CountingCache:
    """Wraps the stage's cache, counting look-ups."""

    def __init__(self, enricher: Enricher) -> None:
        self.gets = 0
        inner = enricher.cache.get

        def get(key: Hashable) -> tuple[bool, Outcome | None]:
            self.gets += 1
            return inner(key)

        enricher.cache.get = get  # type: ignore[method-assign]


async def test_a_batch_from_5_sensors_is_5_lookups_and_5_answers() -> None:
    sensors = [f"s-{n}" for n in range(5)]
    enricher = cached(answers={s: Found(orjson.dumps({"id": s})) for s in sensors})
    looked = CountingCache(enricher)
    keys, values = batch([sensors[n % 5] for n in range(500)])
    result = await enricher.enrich(keys, values)
    assert result.errors == []
    assert [orjson.loads(e or b"")["id"] for e in result.enrichment] == [
        sensors[n % 5] for n in range(500)
    ]
    assert looked.gets == 5
    assert hits(enricher) == 500  # the metric still counts records
    # One object per answer: the job to the worker carries 5 answers and references.
    assert len({id(e) for e in result.enrichment}) == 5
    one = pickle.dumps(Job(values, False, [result.enrichment[0]] * 500, "meta"))
    assert len(pickle.dumps(Job(values, False, result.enrichment, "meta"))) < len(one) + 5 * 20


async def test_a_batch_the_cache_answers_whole_reaches_the_pool_in_the_same_step() -> None:
    enricher = cached(answers={"a": Found(b"{}")})
    handed: list[int] = []

    async def process(
        values: list[bytes | None], *, enrichment: list[bytes | None] | None, field: str
    ) -> BatchResult:
        handed.append(len(values))
        return BatchResult([b"out"] * len(values), [], 0.0, 1)

    keys, values = batch(["a"] * 10)
    step = enrich_then_process(enricher, process, keys, values)
    with pytest.raises(StopIteration) as done:  # one step of the task: it never yielded
        step.send(None)
    assert done.value.value.outputs == [b"out"] * 10
    assert handed == [10]


async def test_a_batch_counts_its_distinct_answers_bytes_while_the_workers_have_them() -> None:
    """Records of one URL share one answer: the batch holds 3 answers' bytes, not 300,
    and the stage counts them (``held_bytes``) until the workers' result is back."""
    bodies = {s: orjson.dumps({"id": s, "pad": "p" * 100}) for s in ("a", "b", "c")}
    enricher = cached(answers={s: Found(body) for s, body in bodies.items()})
    size = sum(map(len, bodies.values()))
    seen: list[int] = []

    async def process(
        values: list[bytes | None], *, enrichment: list[bytes | None] | None, field: str
    ) -> BatchResult:
        seen.append(enricher.held_bytes)
        return BatchResult([b"out"] * len(values), [], 0.0, 1)

    keys, values = batch(["a", "b", "c"] * 100)
    assert (await enricher.enrich(keys, values)).nbytes == size
    await enrich_then_process(enricher, process, keys, values)
    assert seen == [size]
    assert enricher.held_bytes == 0
