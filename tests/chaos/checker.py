"""Reads a run's input and output and says what was lost, duplicated or reordered.

Any test can use it. Every demo event carries its key (``sensor_id``) and ``seq``,
its number within the key; every output keeps both. The output is read with
``read_committed``, as a downstream consumer of an exactly-once run would.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.helpers import Topics, read_topic, wait_caught_up

Ident = tuple[str, int]  # (key, seq)


@dataclass
class Report:
    inputs: int
    outputs: int
    lost: list[Ident] = field(default_factory=list)
    duplicated: dict[Ident, int] = field(default_factory=dict)  # ident -> extra copies
    out_of_order: dict[str, list[int]] = field(default_factory=dict)  # key -> seqs as output
    unexpected: list[Ident] = field(default_factory=list)  # outputs with no input

    @property
    def duplicates(self) -> int:
        return sum(self.duplicated.values())

    def summary(self) -> str:
        return (
            f"{self.inputs} in, {self.outputs} out: {len(self.lost)} lost, "
            f"{self.duplicates} duplicates, {len(self.out_of_order)} keys out of order, "
            f"{len(self.unexpected)} unexpected; lost sample {self.lost[:5]}, "
            f"out-of-order sample {dict(list(self.out_of_order.items())[:2])}"
        )


def ident(value: bytes) -> Ident:
    body = orjson.loads(value)
    return str(body["sensor_id"]), int(body["seq"])


def compare(inputs: list[Any], outputs: list[Any]) -> Report:
    """``inputs`` and ``outputs`` are consumer records (any order across partitions)."""
    wanted = {ident(r.value) for r in inputs}
    report = Report(inputs=len(wanted), outputs=len(outputs))
    seen: Counter[Ident] = Counter()
    per_key: dict[str, list[int]] = defaultdict(list)
    for record in sorted(outputs, key=lambda r: (r.partition, r.offset)):
        key, seq = ident(record.value)
        assert record.key is not None
        assert record.key.decode() == key, "an output must keep its input's key"
        if seen[(key, seq)] == 0:
            per_key[key].append(seq)  # first copies only: order after removing duplicates
        seen[(key, seq)] += 1
    report.lost = sorted(wanted - set(seen))
    report.unexpected = sorted(set(seen) - wanted)
    report.duplicated = {i: n - 1 for i, n in seen.items() if n > 1}
    for key, seqs in per_key.items():
        if seqs != sorted(seqs):
            report.out_of_order[key] = seqs
    return report


async def read_run(
    topics: Topics, count: int, outputs_expected: int | None = None
) -> tuple[list[Any], list[Any]]:
    """Once the group has committed all its input, read the input and the output
    (``count`` outputs expected unless ``outputs_expected`` says fewer: dead letters)."""
    assert await wait_caught_up(topics), "the run did not finish in time"
    expected = count if outputs_expected is None else outputs_expected
    inputs = await read_topic(topics.bootstrap, topics.input, count, wait=60)
    outputs = await read_topic(topics.bootstrap, topics.output, expected, wait=60)
    return inputs, outputs


async def check(topics: Topics, count: int) -> Report:
    """Wait for the run to finish, read both topics and compare."""
    return compare(*await read_run(topics, count))
