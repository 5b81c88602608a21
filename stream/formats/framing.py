"""The Confluent wire format: a zero byte, a 4-byte big-endian schema id, the body.

For Protobuf the message-index list sits between the id and the body: a zig-zag varint
count, then that many zig-zag varint indexes (the path to the message type in the .proto
file); a single 0 byte stands for ``[0]``, the file's first message. Pure functions.
"""

from __future__ import annotations

import struct

from transforms import BadRecord
from transforms.reasons import Reason

MAGIC = 0
HEADER = 5  # magic byte + schema id
_ID = struct.Struct(">I")
_FIRST_MESSAGE = b"\x00"
_MAX_INDEXES = 64  # nesting deeper than this is not a real .proto file


def parse(value: bytes | None) -> tuple[int, int]:
    """``(schema id, offset of what follows the id)``; BadRecord ``bad_framing`` when the
    value is not in the wire format."""
    if not value:
        raise BadRecord(Reason.BAD_FRAMING, "the record has no value")
    if len(value) < HEADER:
        raise BadRecord(Reason.BAD_FRAMING, f"{len(value)} bytes is shorter than the 5-byte header")
    if value[0] != MAGIC:
        raise BadRecord(
            Reason.BAD_FRAMING, f"the first byte is {value[0]:#04x}, not the magic byte 0x00"
        )
    (schema_id,) = _ID.unpack_from(value, 1)
    return schema_id, HEADER


def build(schema_id: int, body: bytes, indexes: bytes = b"") -> bytes:
    """Frame a body; ``indexes`` is an encoded message-index list (Protobuf only)."""
    return b"\x00" + _ID.pack(schema_id) + indexes + body


def header(schema_id: int, indexes: tuple[int, ...] | None = None) -> bytes:
    """The bytes before the body, computed once per output schema."""
    if indexes is None:
        return build(schema_id, b"")
    return build(schema_id, b"", encode_indexes(indexes))


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_indexes(indexes: tuple[int, ...]) -> bytes:
    if indexes == (0,):
        return _FIRST_MESSAGE
    return _varint(_zigzag(len(indexes))) + b"".join(_varint(_zigzag(i)) for i in indexes)


def _read_varint(value: bytes, offset: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if offset >= len(value):
            raise BadRecord(Reason.BAD_FRAMING, "the message-index list is cut short")
        byte = value[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise BadRecord(Reason.BAD_FRAMING, "a message index is longer than 10 bytes")
    return (result >> 1) ^ -(result & 1), offset


def parse_indexes(value: bytes, offset: int) -> tuple[tuple[int, ...], int]:
    """The message-index list at ``offset``; returns it and the offset of the body."""
    count, offset = _read_varint(value, offset)
    if count == 0:
        return (0,), offset
    if count < 0 or count > _MAX_INDEXES:
        raise BadRecord(Reason.BAD_FRAMING, f"a message-index list of {count} entries")
    indexes = []
    for _ in range(count):
        index, offset = _read_varint(value, offset)
        if index < 0:
            raise BadRecord(Reason.BAD_FRAMING, f"a negative message index ({index})")
        indexes.append(index)
    return tuple(indexes), offset
