"""`stream produce`: demo events (or JSON lines from a file) into the input topic."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import orjson

from stream import kafka
from stream.config import ProduceSettings
from stream.errors import MissingTopics, UnknownTopic
from stream.kafka.send import Partitioner, retrieve_later, send_batched

CHUNK = 1000  # events generated, and sends awaited, together
TICK = 0.005  # paced: shortest wait between sends of the events due
DELIVERY_TIMEOUT = 120.0  # seconds for the topic's metadata, room to queue, an answer
_DEFAULT_SERVERS = next(
    f.default for f in dataclasses.fields(ProduceSettings) if f.name == "bootstrap_servers"
)


@dataclass(frozen=True, slots=True)
class Event:
    key: bytes | None
    value: bytes


def demo_events(
    settings: ProduceSettings,
    first_seq: int = 0,
    encode: Callable[[Any], bytes] = orjson.dumps,
) -> Iterator[Event]:
    """Deterministic demo events for a seed: sensor readings or matrices, keyed by id.

    Each event carries ``seq``, its number within its key (``first_seq``, +1, +2,
    ...), so a reader of the output can check per-key order and find gaps or
    duplicates, and ``ts``, its event time (see :class:`EventClock`). ``encode`` turns
    one event into its value (JSON by default; see :func:`demo_encoder` for Avro and
    Protobuf).
    """
    rng = np.random.default_rng(settings.seed)
    clock = EventClock(settings.start_seconds, settings.event_interval_ms)
    keys = [f"sensor-{i:04d}" for i in range(settings.keys)]
    seq = [first_seq] * settings.keys
    sent = 0
    t = np.linspace(0.0, 2 * np.pi, settings.values, endpoint=False)
    while sent < settings.count:
        n = min(CHUNK, settings.count - sent)
        picks = rng.integers(0, settings.keys, size=n)
        if settings.kind == "sensor":
            freq = rng.integers(1, max(2, settings.values // 4), size=(n, 1))
            noise = rng.normal(0.0, 0.1, size=(n, settings.values))
            rows = np.sin(freq * t) + noise
            spikes = rng.random(n) < 0.01  # about 1% end with an anomaly
            rows[spikes, -1] += 8.0
        else:
            size = settings.matrix_size
            mats = rng.normal(0.0, 1.0, size=(n, size, size)) + size * np.eye(size)
        stamps = clock.times(sent, n)
        for i in range(n):
            k = int(picks[i])
            key = keys[k]
            body: dict[str, Any] = {"sensor_id": key, "seq": seq[k], "ts": stamps[i]}
            if settings.kind == "sensor":
                body["values"] = rows[i].tolist()
            else:
                body = {"id": key, "seq": seq[k], "ts": stamps[i], "matrix": mats[i].tolist()}
            seq[k] += 1
            yield Event(key.encode(), encode(body))
        sent += n


class EventClock:
    """The demo events' ``ts`` (seconds since the epoch). By default the wall clock when
    the event is made; with ``start`` (``--start-time``) alone, the wall clock moved to
    begin there; with ``interval_ms`` (``--event-interval``), event ``i`` (counted over
    every key) is at ``start + i * interval`` whatever the sending rate (``start``
    defaulting to now), so a few seconds of sending can span hours of event time."""

    def __init__(
        self,
        start: float | None = None,
        interval_ms: int | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.start = start
        self.interval_ms = interval_ms
        self.wall = wall
        self._first_wall: float | None = None

    def times(self, first: int, n: int) -> list[float]:
        """The event times of events ``first`` to ``first + n - 1``."""
        now = self.wall()
        if self._first_wall is None:
            self._first_wall = now
        if self.interval_ms is None:
            at = now if self.start is None else self.start + (now - self._first_wall)
            return [at] * n
        start = self._first_wall if self.start is None else self.start
        # In whole microseconds, then one division: 100 ms apart reads 0.1, 0.2, 0.3.
        origin = round(start * 1e6)
        step = self.interval_ms * 1000
        micros = origin + (first + np.arange(n, dtype=np.int64)) * step
        return (micros / 1e6).tolist()  # type: ignore[no-any-return]


def file_events(stream: IO[bytes]) -> Iterator[Event]:
    """One event per non-empty line, sent as it is (bad JSON too: it tests the DLQ).

    The key is the line's ``sensor_id`` or ``id`` when the line is a JSON object with one.
    """
    for raw in stream:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        key: bytes | None = None
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            ident = obj.get("sensor_id", obj.get("id"))
            if isinstance(ident, str | int) and not isinstance(ident, bool):
                key = str(ident).encode()
        yield Event(key, line)


class _Progress:
    def __init__(self, total: int | None, quiet: bool) -> None:
        self.total = total
        self.enabled = not quiet and sys.stderr.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, sent: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.5):
            return
        self._last = now
        rate = sent / max(1e-9, now - self.started)
        of = f"/{self.total}" if self.total else ""
        sys.stderr.write(f"\rsent {sent}{of} events ({rate:,.0f}/s)   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


async def produce(settings: ProduceSettings, events: Iterator[Event]) -> tuple[int, float]:
    """Send events (paced by ``--rate`` if set); returns (count, seconds).

    Events go out in per-partition batches (``stream.kafka.send``) rather than one
    ``send()`` each, which costs several times the CPU per event: a load generator that
    shares the machine with what it loads should take little of it. Each record's
    timestamp is when it was queued. Deliveries are awaited every ``CHUNK`` events (and
    at least every 0.2 s)."""
    topic = settings.topic or settings.input_topic
    # Asked first: the producer would wait for the topic's metadata until its delivery
    # timeout, and aiokafka logs a line for every retry meanwhile.
    if not await kafka.partition_ids(settings, topic):
        raise MissingTopics(missing_topic(settings, topic))
    producer = kafka.make_producer(settings, linger_ms=0, delivery_timeout=DELIVERY_TIMEOUT)
    await kafka.start_client(producer, settings)
    progress = _Progress(settings.count if not settings.file else None, settings.quiet)
    partitioner = Partitioner()
    source = iter(events)
    pending: list[asyncio.Future[None]] = []
    sent = unacked = 0
    started = flushed = time.monotonic()
    try:
        while chunk := await _next_chunk(source, settings.rate, started, sent):
            records = [(e.key, e.value, None, None) for e in chunk]
            try:
                queued = await send_batched(producer, topic, records, partitioner, DELIVERY_TIMEOUT)
            except UnknownTopic:  # deleted since it was asked for
                raise MissingTopics(missing_topic(settings, topic)) from None
            pending += [q.future for q in queued]
            sent += len(chunk)
            unacked += len(chunk)
            if unacked >= CHUNK or time.monotonic() - flushed > 0.2:
                await asyncio.gather(*pending)
                pending.clear()
                unacked = 0
                flushed = time.monotonic()
                progress.update(sent)
        await asyncio.gather(*pending)
        progress.update(sent, force=True)
    except BaseException:
        for future in pending:
            retrieve_later(future)
        raise
    finally:
        progress.close()
        await producer.stop()
    return sent, time.monotonic() - started


def missing_topic(settings: ProduceSettings, topic: str) -> str:
    """The one line for a topic that does not exist, with a command that creates it."""
    command = "stream topics create"
    if settings.bootstrap_servers != _DEFAULT_SERVERS:
        command += f" --bootstrap-servers {shlex.quote(settings.bootstrap_servers)}"
    command += f" --input-topic {shlex.quote(topic)}"
    return f"topic {topic} does not exist; create it with `{command}`"


async def _next_chunk(
    source: Iterator[Event], rate: float, started: float, sent: int
) -> list[Event]:
    """The next events to send (none at the end): up to ``CHUNK``; paced, those due once
    the next one's time comes, after a wait of at least ``TICK`` so that they go out
    together (no wait when ``CHUNK`` or more are overdue)."""
    if rate <= 0:
        return list(itertools.islice(source, CHUNK))
    first = next(source, None)
    if first is None:
        return []
    now = time.monotonic()
    if int((now - started) * rate) + 1 - sent < CHUNK:  # not far behind
        await asyncio.sleep(max(TICK, started + sent / rate - now))
    due = max(1, int((time.monotonic() - started) * rate) + 1 - sent)
    return [first, *itertools.islice(source, min(due, CHUNK) - 1)]


def demo_encoder(settings: ProduceSettings, topic: str) -> Callable[[Any], bytes]:
    """For ``stream produce --format avro|protobuf``: registers the demo event's schema
    (``SensorReading``) under ``<topic>-value`` and returns a function encoding one event
    (framed). Blocking HTTP: call it before the loop is busy, or via ``asyncio.to_thread``."""
    # Formats only when used: JSON runs need neither the registry client nor the codecs.
    from stream.formats.registry import RegistryClient, RegistryError  # noqa: PLC0415
    from stream.formats.setup import (  # noqa: PLC0415
        check_registry_api,
        register_output,
        registry_config,
    )
    from transforms.builtin import SENSOR_READING_SCHEMA  # noqa: PLC0415
    from transforms.codec import Encoder  # noqa: PLC0415

    fmt = settings.format
    client = RegistryClient(registry_config(settings))
    check_registry_api(client)
    subject = f"{topic}-value"
    schema_id, text = register_output(
        client, subject, fmt, SENSOR_READING_SCHEMA, "the demo event schema"
    )
    encoder: Encoder
    if fmt == "avro":
        from stream.formats.avro import AvroEncoder  # noqa: PLC0415

        encoder = AvroEncoder(schema_id, text)
    else:
        from stream.formats.protobuf import ProtobufEncoder  # noqa: PLC0415

        encoder = ProtobufEncoder(schema_id, text)

    def encode(event: Any) -> bytes:
        (value,) = encoder.encode_batch([event])
        if not isinstance(value, bytes):
            raise RegistryError(f"a demo event does not fit its schema: {value}")
        return value

    return encode


def write_avro_file(settings: ProduceSettings, path: str) -> int:
    """Write the sensor demo events of ``settings`` (--count, --seed, --keys, --values) to
    an Avro object container file at ``path``, the writer schema that of ``SensorReading``
    (what ``stream try --input-format avro`` and ``--format avro`` use); returns how many.
    A path that cannot be written is a :class:`ConfigError` (one line)."""
    import json  # noqa: PLC0415

    from fastavro import parse_schema, writer  # noqa: PLC0415 - only Avro files pay for it

    from stream.formats.avro import schema_text  # noqa: PLC0415
    from stream.options import ConfigError  # noqa: PLC0415
    from transforms.builtin import SENSOR_READING_SCHEMA  # noqa: PLC0415

    schema = parse_schema(json.loads(schema_text(SENSOR_READING_SCHEMA)))
    records = (orjson.loads(e.value) for e in demo_events(settings))
    try:
        with open(path, "wb") as handle:
            writer(handle, schema, records, codec="deflate")
    except OSError as exc:
        raise ConfigError(f"--avro-file: cannot write {path!r}: {exc.strerror}") from None
    return settings.count
