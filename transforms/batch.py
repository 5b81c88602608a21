"""The core of a worker's job, shared by the service, ``stream try`` and the testing helper:
decode a batch of raw record values, enforce the size limit, run the transform over the
whole batch and encode each output. One output or one error per record; errors for single
records are returned, never raised.

Pure: no I/O, no processes, no clock (the caller times it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from transforms.base import MAX_MESSAGE_CHARS, BadRecord, Transform
from transforms.reasons import Reason

__all__ = ["BatchOutcome", "apply_batch_fn", "bounded", "run_batch"]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Per record: the encoded output, or None where ``errors`` names the record.

    ``outputs`` is None for a passthrough transform: each output is its input, except
    where ``errors`` names the record.
    """

    outputs: list[bytes | None] | None
    errors: list[tuple[int, str, str]]  # (index in batch, reason, message), sorted


def bounded(text: str) -> str:
    """A message cut to the length a dead letter's reason message may have."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 3] + "..."


def _decode(value: bytes | None, max_bytes: int) -> Any:
    if not value:
        raise BadRecord(Reason.EMPTY, "the record has no value")
    if len(value) > max_bytes:
        raise BadRecord(
            Reason.TOO_LARGE, f"{len(value)} bytes is more than the limit of {max_bytes}"
        )
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        reason = Reason.INVALID_UTF8 if "UTF-8" in str(exc) else Reason.INVALID_JSON
        raise BadRecord(reason, bounded(str(exc))) from None


def apply_batch_fn(transform: Transform, items: list[Any]) -> list[Any]:
    """Run the batch function; if it raises, isolate the culprit record by record."""
    try:
        results = transform.fn(items)
        if len(results) == len(items):
            return results
        problem = f"returned {len(results)} results for {len(items)} records"
    except Exception as exc:  # noqa: BLE001 - a transform bug must not lose the batch
        problem = f"{type(exc).__name__}: {exc}"
    if len(items) == 1:
        return [BadRecord(Reason.TRANSFORM_ERROR, bounded(problem))]
    return [apply_batch_fn(transform, [item])[0] for item in items]


def merge(item: Any, extra: bytes, field: str) -> Any:
    """A decoded record with the enrichment stage's answer under ``field``."""
    if not isinstance(item, dict):
        raise BadRecord(
            Reason.ENRICH_FAILED, f"the record is not a JSON object, so it cannot take {field!r}"
        )
    try:
        item[field] = orjson.loads(extra)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(
            Reason.ENRICH_FAILED, bounded(f"the enrichment is not JSON: {exc}")
        ) from None
    return item


def bad_results(
    errors: list[tuple[int, str, str]], index: Sequence[int], results: Sequence[Any]
) -> None:
    """The transform's per-record errors (``BadRecord`` results), added to ``errors``."""
    for at, result in zip(index, results, strict=True):
        if isinstance(result, BadRecord):
            errors.append((at, result.reason, bounded(result.message)))


def keep_output(
    outputs: list[bytes | None],
    errors: list[tuple[int, str, str]],
    index: int,
    encoded: bytes,
    max_record_bytes: int,
) -> None:
    """One encoded output in its place, or ``output_too_large`` past the limit."""
    if len(encoded) > max_record_bytes:
        message = f"the output is {len(encoded)} bytes, more than the limit of {max_record_bytes}"
        errors.append((index, Reason.OUTPUT_TOO_LARGE, message))
    else:
        outputs[index] = encoded


def run_batch(
    transform: Transform,
    values: Sequence[bytes | None],
    max_record_bytes: int,
    enrichment: Sequence[bytes | None] | None = None,
    field: str = "meta",
) -> BatchOutcome:
    """Decode, (merge the enrichment stage's answers,) transform and encode one batch;
    one result or one error per record."""
    errors: list[tuple[int, str, str]] = []
    outputs: list[bytes | None] = [None] * len(values)
    good_index: list[int] = []
    good_items: list[Any] = []
    merged = False
    for index, value in enumerate(values):
        try:
            item = _decode(value, max_record_bytes)
            if enrichment is not None and (extra := enrichment[index]) is not None:
                item = merge(item, extra, field)
                merged = True
            good_items.append(item)
            good_index.append(index)
        except BadRecord as bad:
            errors.append((index, bad.reason, bad.message))
    results = apply_batch_fn(transform, good_items) if good_items else []
    if transform.passthrough and not merged:  # an enriched record is not its input
        bad_results(errors, good_index, results)
        errors.sort()
        return BatchOutcome(None, errors)
    for index, result in zip(good_index, results, strict=True):
        if isinstance(result, BadRecord):
            errors.append((index, result.reason, bounded(result.message)))
            continue
        try:
            encoded = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            errors.append((index, Reason.ENCODE_ERROR, bounded(str(exc))))
            continue
        keep_output(outputs, errors, index, encoded, max_record_bytes)
    errors.sort()
    return BatchOutcome(outputs, errors)
