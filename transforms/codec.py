"""The one small interface every format implements, and JSON's implementation of it.

A decoder turns a batch of raw values into decoded items (with the index of each) and
per-record errors; an encoder turns a batch of transform outputs into bytes or a
:class:`BadRecord` each. JSON (orjson) lives here, beside the batch core, so the testing
helper needs nothing from the service; the registry formats (Avro, Protobuf) implement
the same interface in ``stream.formats``.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from transforms.base import BadRecord
from transforms.checks import check_size, load_json
from transforms.messages import bounded
from transforms.reasons import Reason

__all__ = ["JSON_DECODER", "JSON_ENCODER", "Decoded", "Decoder", "Encoder", "JsonDecoder"]


@dataclass(slots=True)
class Decoded:
    """A decoded batch: the items, the batch position of each, and the records that
    failed to decode (index, reason, message)."""

    index: list[int] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)


class Decoder(Protocol):
    def decode_batch(self, values: Sequence[bytes | None], max_bytes: int) -> Decoded: ...


class Encoder(Protocol):
    def encode_batch(self, items: list[Any]) -> list[bytes | BadRecord]: ...


class JsonDecoder:
    """JSON values: the record checks of :mod:`transforms.checks`, one per record."""

    def decode_batch(self, values: Sequence[bytes | None], max_bytes: int) -> Decoded:
        out = Decoded()
        check, load = check_size, load_json
        for index, value in enumerate(values):
            try:
                item = load(check(value, max_bytes))
            except BadRecord as bad:
                out.errors.append((index, bad.reason, bad.message))
                continue
            out.items.append(item)
            out.index.append(index)
        return out


class JsonEncoder:
    """JSON outputs (numpy arrays and scalars included); ``encode_error`` for the rest."""

    def encode_batch(self, items: list[Any]) -> list[bytes | BadRecord]:
        out: list[bytes | BadRecord] = []
        dumps, option = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
        for item in items:
            try:
                out.append(dumps(item, option=option))
            except TypeError as exc:
                out.append(BadRecord(Reason.ENCODE_ERROR, bounded(str(exc))))
        return out


JSON_DECODER = JsonDecoder()
JSON_ENCODER = JsonEncoder()
