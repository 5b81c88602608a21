"""The windows peer of `stream bench`: our windows case's aggregation written in
quix-streams 3.x, as its users write it.

Run as ``python -m stream.bench.quix_windows ...`` by the benchmark, in a process group
of its own like :mod:`stream.bench.engines`. It reads the input topic in a consumer
group with ``processing_guarantee="exactly-once"``, takes each record's event time from
its ``ts`` field (seconds, a ``timestamp_extractor``), and per key and tumbling window
(``tumbling_window(60 s)``, no grace) reduces the ``values`` array of every record to
count, sum, sum of squared deviations (merged as Chan et al.'s parallel variance, as our
service does), min and max. ``.final(closing_strategy="partition")`` emits a
window when its partition's stream time passes its end, as our service closes windows
(stream time per input partition), so both write the same windows. Each output is keyed
by the input key, its value a JSON object with ``window_start`` and ``window_end`` (epoch
ms), ``count``, ``sum``, ``mean``, ``std`` (population), ``min`` and ``max``: the same
fields as ours.

State lives in RocksDB under a temporary folder, backed by quix's changelog topic (named
by quix after the group and the input topic; the benchmark deletes it with its topics).
quix commits every ``--commit-interval`` seconds (quix's default, 5, unless given: the
benchmark times the case to its last output, not its last commit). It writes ``engine
ready`` to stderr when it has processed its first record (quix logs nothing when it is
assigned its partitions). quixstreams is in the dev lock only: it is imported in
``main`` alone, so the benchmark's catalogue and the unit tests never need it.
"""

from __future__ import annotations

import argparse
import math
import operator
import sys
import tempfile
from datetime import timedelta
from typing import Any

READY = "engine ready"  # the benchmark's ready line for its own programs

Summary = dict[str, float]  # a window's running state: count, sum, m2, min, max


def summarize(readings: list[float]) -> Summary:
    """One record's readings as a window's state (the window's initializer): their count,
    sum, sum of squared deviations from their mean (``m2``), min and max."""
    count = len(readings)
    total = sum(readings)
    mean = total / count
    deviations = [x - mean for x in readings]
    return {
        "count": float(count),
        "sum": total,
        "m2": sum(map(operator.mul, deviations, deviations)),
        "min": min(readings),
        "max": max(readings),
    }


def merge(state: Summary, readings: list[float]) -> Summary:
    """A window's state with one more record's readings (the window's reducer); ``m2``
    merges as Chan et al.'s parallel variance, exact where a sum of squares cancels."""
    one = summarize(readings)
    count = state["count"] + one["count"]
    delta = one["sum"] / one["count"] - state["sum"] / state["count"]
    return {
        "count": count,
        "sum": state["sum"] + one["sum"],
        "m2": state["m2"] + one["m2"] + delta * delta * state["count"] * one["count"] / count,
        "min": min(state["min"], one["min"]),
        "max": max(state["max"], one["max"]),
    }


def window_output(window: dict[str, Any]) -> dict[str, Any]:
    """A closed window (quix's ``{"start", "end", "value"}``) as our output's fields."""
    state: Summary = window["value"]
    count = state["count"]
    return {
        "window_start": window["start"],
        "window_end": window["end"],
        "count": int(count),
        "sum": state["sum"],
        "mean": state["sum"] / count,
        "std": math.sqrt(state["m2"] / count),
        "min": state["min"],
        "max": state["max"],
    }


def event_time_ms(field: str) -> Any:
    """A quix ``timestamp_extractor``: the record's ``field`` (seconds) in milliseconds."""

    def extract(value: Any, _headers: Any, _timestamp: int, _type: Any) -> int:
        return int(value[field] * 1000)

    return extract


def announce_once() -> Any:
    """An ``on_message_processed`` callback that writes the ready line the first time."""
    done: list[bool] = []

    def announce(_topic: str, _partition: int, _offset: int) -> None:
        if not done:
            done.append(True)
            sys.stderr.write(READY + "\n")
            sys.stderr.flush()

    return announce


def run(args: argparse.Namespace, state_dir: str) -> None:
    from quixstreams import Application  # noqa: PLC0415 - in the dev lock only

    app = Application(
        broker_address=args.bootstrap_servers,
        consumer_group=args.group_id,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval,
        state_dir=state_dir,
        on_message_processed=announce_once(),
        loglevel="WARNING",
    )
    source = app.topic(
        args.input_topic,
        value_deserializer="json",
        timestamp_extractor=event_time_ms(args.event_time),
    )
    sink = app.topic(args.output_topic, value_serializer="json")
    field = args.value_field
    sdf = app.dataframe(source)
    sdf = (
        sdf.tumbling_window(timedelta(seconds=args.window))
        .reduce(
            reducer=lambda state, value: merge(state, value[field]),
            initializer=lambda value: summarize(value[field]),
        )
        .final(closing_strategy="partition")
    )
    sdf = sdf.apply(window_output)
    sdf.to_topic(sink)
    app.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.bench.quix_windows")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--window", type=float, default=60.0, help="seconds")
    parser.add_argument("--value-field", default="values")
    parser.add_argument("--event-time", default="ts", help="a field of seconds")
    parser.add_argument("--commit-interval", type=float, default=5.0, help="seconds (quix's)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        run(args, state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
