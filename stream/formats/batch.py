"""A worker's batch in a registry format: decode with the input's codec, (merge the
enrichment stage's answers,) transform, encode with the output's codec. The JSON-only
batch is :func:`transforms.batch.run_batch`; this is its twin for the codecs, shared by
the workers and ``stream try``.

Pure: no I/O of its own, no clock. Only a registry outage escapes, as
:class:`~stream.formats.registry.RegistryError` from the decoder; every other problem is
one record's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream.formats.spec import Codecs
from transforms import BadRecord, Transform
from transforms.batch import (
    BatchOutcome,
    apply_batch_fn,
    bad_results,
    bounded,
    keep_output,
    merge,
)


def run_coded_batch(
    transform: Transform,
    codecs: Codecs,
    values: Sequence[bytes | None],
    max_record_bytes: int,
    *,
    same_bytes: bool,
    enrichment: Sequence[bytes | None] | None = None,
    field: str = "meta",
) -> BatchOutcome:
    """One output or one error per record. ``same_bytes``: input and output formats are
    one, so a passthrough transform's outputs are its inputs (``outputs`` is None)."""
    decoded = codecs.decoder.decode_batch(list(values), max_record_bytes)
    errors = decoded.errors
    good_index = decoded.index
    if enrichment is not None:
        items = []
        for index, item in zip(list(good_index), decoded.items, strict=True):
            extra = enrichment[index]
            try:
                items.append(item if extra is None else merge(item, extra, field))
            except BadRecord as bad:
                errors.append((index, bad.reason, bad.message))
                good_index.remove(index)
        decoded.items[:] = items
    results = apply_batch_fn(transform, decoded.items) if decoded.items else []
    enriched = enrichment is not None and any(e is not None for e in enrichment)
    if transform.passthrough and same_bytes and not enriched:
        bad_results(errors, good_index, results)
        errors.sort()
        return BatchOutcome(None, errors)
    outputs: list[bytes | None] = [None] * len(values)
    ok_index: list[int] = []
    ok_items: list[Any] = []
    for index, result in zip(good_index, results, strict=True):
        if isinstance(result, BadRecord):
            errors.append((index, result.reason, bounded(result.message)))
        else:
            ok_index.append(index)
            ok_items.append(result)
    encoded_all = codecs.encoder.encode_batch(ok_items) if ok_items else []
    for index, encoded in zip(ok_index, encoded_all, strict=True):
        if isinstance(encoded, BadRecord):
            errors.append((index, encoded.reason, bounded(encoded.message)))
            continue
        keep_output(outputs, errors, index, encoded, max_record_bytes)
    errors.sort()
    return BatchOutcome(outputs, errors)
