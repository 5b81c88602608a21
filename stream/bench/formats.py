"""Per-record cost of each format inside a worker: decode + transform + encode of a
batch of demo sensor events, in microseconds per record, for json, avro and protobuf.

In process and without a registry (schemas held in memory, as a worker's cache holds
them after the first lookup), so the numbers are the formats' CPU cost alone.
``python -m stream.bench.formats`` prints it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stream.formats.avro import AvroEncoder, schema_text
from stream.formats.avro import decoder as avro_decoder
from stream.formats.protobuf import ProtobufEncoder, proto_text
from stream.formats.protobuf import decoder as proto_decoder
from stream.formats.registry import RegisteredSchema, StaticSchemas
from transforms import resolve
from transforms.builtin import SENSOR_FEATURES_SCHEMA, SENSOR_READING_SCHEMA
from transforms.codec import JSON_DECODER, JSON_ENCODER, Decoder, Encoder

FORMATS = ("json", "avro", "protobuf")


@dataclass(frozen=True, slots=True)
class FormatCost:
    """Microseconds per record, best of the repeats."""

    format: str
    decode_us: float
    transform_us: float
    encode_us: float
    total_us: float
    input_bytes: float  # mean size of an input record
    output_bytes: float  # mean size of an output record


def _events(count: int, values: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(0.0, 1.0, size=(count, values)).tolist()
    return [
        {"sensor_id": f"sensor-{i % 16:04d}", "seq": i, "ts": 1.7e9 + i, "values": rows[i]}
        for i in range(count)
    ]


def _codecs(fmt: str) -> tuple[Encoder, Decoder, Encoder]:
    """(input encoder, as a producer would; the worker's decoder; the worker's encoder)."""
    if fmt == "json":
        return JSON_ENCODER, JSON_DECODER, JSON_ENCODER
    if fmt == "avro":
        reading, features = schema_text(SENSOR_READING_SCHEMA), schema_text(SENSOR_FEATURES_SCHEMA)
        source = StaticSchemas(RegisteredSchema(1, "AVRO", reading))
        return AvroEncoder(1, reading), avro_decoder(source), AvroEncoder(2, features)
    reading, features = proto_text(SENSOR_READING_SCHEMA), proto_text(SENSOR_FEATURES_SCHEMA)
    source = StaticSchemas(RegisteredSchema(1, "PROTOBUF", reading))
    return ProtobufEncoder(1, reading), proto_decoder(source), ProtobufEncoder(2, features)


def measure_one(
    fmt: str, count: int = 20_000, batch: int = 500, values: int = 64, repeats: int = 3
) -> FormatCost:
    transform = resolve("sensor-features")
    producer, decoder, encoder = _codecs(fmt)
    raw = [
        v for v in producer.encode_batch(list(_events(count, values, 0))) if isinstance(v, bytes)
    ]
    inputs: list[bytes | None] = list(raw)
    batches = [inputs[i : i + batch] for i in range(0, count, batch)]
    best: tuple[float, float, float] | None = None
    out_bytes = 0
    for _ in range(repeats):
        spent = [0.0, 0.0, 0.0]
        out_bytes = 0
        for values_batch in batches:
            t0 = time.perf_counter()
            decoded = decoder.decode_batch(values_batch, 1 << 20)
            t1 = time.perf_counter()
            results = transform.fn(decoded.items)
            t2 = time.perf_counter()
            encoded = encoder.encode_batch(results)
            t3 = time.perf_counter()
            assert not decoded.errors, decoded.errors[:1]
            out_bytes += sum(len(e) for e in encoded if isinstance(e, bytes))
            spent[0] += t1 - t0
            spent[1] += t2 - t1
            spent[2] += t3 - t2
        if best is None or sum(spent) < sum(best):
            best = (spent[0], spent[1], spent[2])
    assert best is not None
    per = [1e6 * s / count for s in best]
    return FormatCost(
        fmt,
        round(per[0], 2),
        round(per[1], 2),
        round(per[2], 2),
        round(sum(per), 2),
        round(sum(map(len, raw)) / count, 1),
        round(out_bytes / count, 1),
    )


def measure(
    count: int = 20_000, batch: int = 500, values: int = 64, repeats: int = 5
) -> list[FormatCost]:
    """The cost of each format (one row per format). The formats
    take turns, best of ``repeats`` each, so a neighbour's load hits them alike."""
    best: dict[str, FormatCost] = {}
    for _ in range(repeats):
        for fmt in FORMATS:
            cost = measure_one(fmt, count, batch, values, repeats=1)
            if fmt not in best or cost.total_us < best[fmt].total_us:
                best[fmt] = cost
    return [best[fmt] for fmt in FORMATS]


def main() -> None:
    rows = measure()
    head = f"{'format':<9}{'decode':>9}{'transform':>11}{'encode':>9}{'total':>9}"
    head += f"{'in B':>8}{'out B':>8}   (us per record, sensor-features, 64 values)"
    print(head)  # noqa: T201
    for row in rows:
        d = asdict(row)
        print(  # noqa: T201
            f"{d['format']:<9}{d['decode_us']:>9}{d['transform_us']:>11}{d['encode_us']:>9}"
            f"{d['total_us']:>9}{d['input_bytes']:>8}{d['output_bytes']:>8}"
        )


if __name__ == "__main__":
    main()
