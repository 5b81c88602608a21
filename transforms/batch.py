"""The core of a worker's job, shared by the service, ``stream try`` and the testing helper:
decode a batch of raw record values with the input's codec (JSON unless told), merge the
enrichment stage's answers, run the transform over the whole batch and encode each output
with the output's codec. One output or one error per record; errors for single records are
returned, never raised (only what a codec raises for the whole batch, such as a schema
registry outage, escapes).

Pure: no I/O of its own, no processes, no clock (the caller times it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transforms.base import BadRecord, Transform
from transforms.checks import load_json
from transforms.codec import JSON_DECODER, JSON_ENCODER, Decoder, Encoder
from transforms.messages import bounded
from transforms.reasons import Reason

__all__ = ["BatchOutcome", "apply_batch_fn", "run_batch"]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Per record: the encoded output, or None where ``errors`` names the record.

    ``outputs`` is None for a passthrough transform: each output is its input, except
    where ``errors`` names the record.
    """

    outputs: list[bytes | None] | None
    errors: list[tuple[int, str, str]]  # (index in batch, reason, message), sorted


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
        item[field] = load_json(extra)
    except BadRecord as bad:
        raise BadRecord(
            Reason.ENRICH_FAILED, f"the enrichment is not JSON: {bad.message}"
        ) from None
    return item


def run_batch(
    transform: Transform,
    values: Sequence[bytes | None],
    max_record_bytes: int,
    enrichment: Sequence[bytes | None] | None = None,
    field: str = "meta",
    *,
    decoder: Decoder = JSON_DECODER,
    encoder: Encoder = JSON_ENCODER,
    same_bytes: bool = True,
) -> BatchOutcome:
    """Decode, (merge the enrichment stage's answers,) transform and encode one batch;
    one result or one error per record. ``same_bytes``: input and output formats are one,
    so a passthrough transform's outputs are its inputs (``outputs`` is None) unless a
    record was enriched."""
    decoded = decoder.decode_batch(values, max_record_bytes)
    errors = decoded.errors
    good_index, good_items = decoded.index, decoded.items
    merged = False
    if enrichment is not None:
        good_index, good_items = [], []
        for index, item in zip(decoded.index, decoded.items, strict=True):
            extra = enrichment[index]
            try:
                good_items.append(item if extra is None else merge(item, extra, field))
            except BadRecord as bad:
                errors.append((index, bad.reason, bad.message))
                continue
            good_index.append(index)
            merged = merged or extra is not None
    results = apply_batch_fn(transform, good_items) if good_items else []
    if transform.passthrough and same_bytes and not merged:  # an enriched record is not its input
        for index, result in zip(good_index, results, strict=True):
            if isinstance(result, BadRecord):
                errors.append((index, result.reason, bounded(result.message)))
        errors.sort()
        return BatchOutcome(None, errors)
    ok_index: list[int] = []
    ok_items: list[Any] = []
    for index, result in zip(good_index, results, strict=True):
        if isinstance(result, BadRecord):
            errors.append((index, result.reason, bounded(result.message)))
        else:
            ok_index.append(index)
            ok_items.append(result)
    outputs: list[bytes | None] = [None] * len(values)
    encoded_all = encoder.encode_batch(ok_items) if ok_items else []
    for index, encoded in zip(ok_index, encoded_all, strict=True):
        if isinstance(encoded, BadRecord):
            errors.append((index, encoded.reason, bounded(encoded.message)))
        elif len(encoded) > max_record_bytes:
            message = (
                f"the output is {len(encoded)} bytes, more than the limit of {max_record_bytes}"
            )
            errors.append((index, Reason.OUTPUT_TOO_LARGE, message))
        else:
            outputs[index] = encoded
    errors.sort()
    return BatchOutcome(outputs, errors)
