"""JSON values (orjson): today's format, and the default. No framing, no registry."""

from __future__ import annotations

from typing import Any

import orjson

from stream.formats.codec import Decoded, short
from transforms import BadRecord


class JsonDecoder:
    def decode_batch(self, values: list[bytes | None], max_bytes: int) -> Decoded:
        out = Decoded()
        loads = orjson.loads
        for index, value in enumerate(values):
            if not value:
                out.errors.append((index, "empty", "the record has no value"))
                continue
            if len(value) > max_bytes:
                message = f"{len(value)} bytes is more than the limit of {max_bytes}"
                out.errors.append((index, "too_large", message))
                continue
            try:
                out.items.append(loads(value))
            except orjson.JSONDecodeError as exc:
                reason = "invalid_utf8" if "UTF-8" in str(exc) else "invalid_json"
                out.errors.append((index, reason, short(str(exc))))
                continue
            out.index.append(index)
        return out


class JsonEncoder:
    def encode_batch(self, items: list[Any]) -> list[bytes | BadRecord]:
        out: list[bytes | BadRecord] = []
        dumps, option = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
        for item in items:
            try:
                out.append(dumps(item, option=option))
            except TypeError as exc:
                out.append(BadRecord("encode_error", short(str(exc))))
        return out
