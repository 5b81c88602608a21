"""The checks a record's value gets before anything decodes it further: it has a value,
it is within the size limit, and (for JSON) it is JSON. Each failure is a
:class:`BadRecord` with its :class:`Reason`; the worker's decoders and the enrichment
stage (which skips what the worker will refuse) decide it here, once.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from transforms.base import BadRecord
from transforms.messages import bounded
from transforms.reasons import Reason

__all__ = ["check_size", "decode_json", "load_json"]


def check_size(value: bytes | None, max_bytes: int) -> bytes:
    """The value itself; ``empty`` without one, ``too_large`` past ``max_bytes``."""
    if not value:
        raise BadRecord(Reason.EMPTY, "the record has no value")
    if len(value) > max_bytes:
        raise BadRecord(
            Reason.TOO_LARGE, f"{len(value)} bytes is more than the limit of {max_bytes}"
        )
    return value


def load_json(value: bytes) -> Any:
    """The decoded JSON value; ``invalid_utf8`` or ``invalid_json`` when it is not."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        reason = Reason.INVALID_UTF8 if "UTF-8" in str(exc) else Reason.INVALID_JSON
        raise BadRecord(reason, bounded(str(exc))) from None


def decode_json(value: bytes | None, max_bytes: int) -> Any:
    """:func:`check_size`, then :func:`load_json`."""
    return load_json(check_size(value, max_bytes))
