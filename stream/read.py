"""`stream read TOPIC`: a topic's records, one line each, for a person to read.

    output_topic[2]@41 key=sensor-0007 {"sensor_id":"sensor-0007","mean":0.01,...}
    input_topic.dlq[0]@3 key=sensor-0001 {"id":"sensor-0001","matrix":[[1.0,...]]}
      reason=schema message="missing field(s): sensor_id, values" source=input_topic[0]@17

The first line is where the record is (topic[partition]@offset), its key and its value
decoded through ``--input-format`` and printed as compact JSON. A dead letter (a record
with a ``stream.error.reason`` header) gets a second, indented line: why it failed and
where it came from. What a record holds never reaches the terminal raw: bytes that are
not text, control characters and escape sequences are printed escaped, and a long value
is cut with a note, so a hostile record cannot rewrite the screen or flood it.

The lines are made here (pure); the records come from :mod:`stream.kafka.reading`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson

from stream.config import ReadSettings, registry_password
from stream.kafka.reading import TopicRecord, records

ERROR_PREFIX = "stream.error."  # the dead-letter headers (stream.engine.routing writes them)
SOURCE_PREFIX = "stream.source."
REASON = ERROR_PREFIX + "reason"
KEY_CHARS = 200  # longest key shown
_BARE = re.compile(r"[A-Za-z0-9._:/@+=-]+")  # a key shown without quotes
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_DECODE_LIMIT = 1 << 30  # values are as large as the broker let them be


def escaped(text: str, limit: int = 0, *, quote: bool = True) -> tuple[str, bool]:
    """``text`` safe for a terminal: printable characters as they are, the rest escaped
    (and, to be shown in quotes, backslash and double quote); undecodable bytes
    (surrogate escapes) as \\xNN. Cut at ``limit`` characters of the result (0: no
    limit); True when it was cut."""
    out: list[str] = []
    size = 0
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES and (quote or ch not in '\\"'):
            piece = _ESCAPES[ch]
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            piece = f"\\x{code - 0xDC00:02x}"
        elif ch.isprintable():
            piece = ch
        elif code <= 0xFF:
            piece = f"\\x{code:02x}"
        elif code <= 0xFFFF:
            piece = f"\\u{code:04x}"
        else:
            piece = f"\\U{code:08x}"
        if limit and size + len(piece) > limit:
            return "".join(out), True
        out.append(piece)
        size += len(piece)
    return "".join(out), False


def quoted(data: bytes, limit: int = 0) -> str:
    """Bytes as a double-quoted, escaped string, cut at ``limit`` with a note."""
    shown, cut = escaped(data.decode("utf-8", "surrogateescape"), limit)
    return f'"{shown}"' + (f" ...[cut: {len(data)} bytes in all]" if cut else "")


def key_text(key: bytes | None) -> str:
    if key is None:
        return "null"
    text = key.decode("utf-8", "surrogateescape")
    if _BARE.fullmatch(text) and text != "null" and len(text) <= KEY_CHARS:
        return text
    return quoted(key, KEY_CHARS)


def _plain(value: Any) -> Any:
    """What orjson cannot write itself (Avro bytes and decimals): as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def decoded_text(item: Any, limit: int) -> str:
    """A decoded value as compact JSON on one line, escaped, cut at ``limit``."""
    text = orjson.dumps(item, default=_plain, option=orjson.OPT_NON_STR_KEYS).decode()
    shown, cut = escaped(text, limit, quote=False)  # JSON escapes its quotes itself
    return shown + (f" ...[cut: {len(text)} characters in all]" if cut else "")


def undecoded_text(value: bytes, why: str, limit: int) -> str:
    """A value that did not decode: why, its size, and its bytes escaped."""
    return f"({why}, {len(value)} bytes) {quoted(value, limit)}"


def json_values(values: Sequence[bytes | None], limit: int) -> list[str]:
    """Each value's text under --input-format json."""
    out: list[str] = []
    for value in values:
        if value is None:
            out.append("(no value)")
            continue
        try:
            item = orjson.loads(value)
        except orjson.JSONDecodeError:
            out.append(undecoded_text(value, _not_json(value), limit))
            continue
        out.append(decoded_text(item, limit))
    return out


def _not_json(value: bytes) -> str:
    """Why a value is not JSON, as a newcomer would want it said."""
    if len(value) >= 5 and value[0] == 0:
        schema_id = int.from_bytes(value[1:5], "big")
        return (
            f"not JSON: the Schema Registry's wire format, schema id {schema_id}; "
            "--input-format avro or protobuf decodes it"
        )
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return "not JSON"


def dead_letter_line(headers: Sequence[tuple[str, bytes]], limit: int) -> str | None:
    """The second line of a dead letter (None for any other record): its reason, its
    message and its source, then any other ``stream.error.*`` header."""
    found = {name: value for name, value in headers}
    if REASON not in found:
        return None

    def text(name: str) -> str:
        value = found.get(name, b"")
        shown = value.decode("utf-8", "surrogateescape")
        plain, cut = escaped(shown, limit)
        return plain if not cut and _BARE.fullmatch(plain) else quoted(value, limit)

    parts = [f"reason={text(REASON)}"]
    if ERROR_PREFIX + "message" in found:
        parts.append(f"message={quoted(found[ERROR_PREFIX + 'message'], limit)}")
    topic, partition, offset = (SOURCE_PREFIX + n for n in ("topic", "partition", "offset"))
    if topic in found:
        parts.append(f"source={text(topic)}[{text(partition)}]@{text(offset)}")
    shown = {REASON, ERROR_PREFIX + "message", topic, partition, offset}
    for name in found:
        if name.startswith(ERROR_PREFIX) and name not in shown:
            parts.append(f"{_header_name(name[len(ERROR_PREFIX) :])}={text(name)}")
    return "  " + " ".join(parts)


def _header_name(name: str) -> str:
    return escaped(name, KEY_CHARS)[0]


def record_lines(topic: str, record: TopicRecord, value: str, limit: int) -> list[str]:
    """The lines of one record, given its value's text."""
    where = f"{topic}[{record.partition}]@{record.offset}"
    lines = [f"{where} key={key_text(record.key)} {value}"]
    letter = dead_letter_line(record.headers, limit)
    if letter is not None:
        lines.append(letter)
    return lines


@dataclass
class Tally:
    """What was printed: records and dead letters."""

    records: int = 0
    dead_letters: int = 0


Decode = Callable[[Sequence[bytes | None]], list[str]]


def registry_values(settings: ReadSettings) -> Decode:
    """Each value's text under --input-format avro or protobuf (blocking HTTP to the
    registry for each schema id not seen before: call it in a thread)."""
    from stream.formats.registry import RegistryClient, RegistryConfig  # noqa: PLC0415

    config = RegistryConfig(
        url=settings.schema_registry_url,
        username=settings.schema_registry_username,
        password=registry_password(settings),
        cafile=settings.schema_registry_cafile,
    )
    client = RegistryClient(config)
    if settings.input_format == "avro":
        from stream.formats.avro import decoder  # noqa: PLC0415
    else:
        from stream.formats.protobuf import decoder  # noqa: PLC0415
    reader = decoder(client)
    limit = settings.max_width

    def decode(values: Sequence[bytes | None]) -> list[str]:
        result = reader.decode_batch(values, _DECODE_LIMIT)
        out = ["(no value)" if v is None else "" for v in values]
        for index, item in zip(result.index, result.items, strict=True):
            out[index] = decoded_text(item, limit)
        for index, reason, message in result.errors:
            value = values[index]
            if value is not None:
                why = f"not {settings.input_format}: {reason}: {escaped(message, 200)[0]}"
                out[index] = undecoded_text(value, why, limit)
        return out

    return decode


async def read(settings: ReadSettings, topic: str, write: Callable[[str], None]) -> Tally:
    """Print ``topic``'s records through ``write`` (one call per fetch, lines joined);
    what was printed."""
    tally = Tally()
    registry = registry_values(settings) if settings.input_format != "json" else None
    reading = records(settings, topic, isolation=settings.isolation, follow=settings.follow)
    async with aclosing(reading) as batches:
        async for fetched_batch in batches:
            batch = fetched_batch
            if settings.count:
                batch = batch[: settings.count - tally.records]
            values = [r.value for r in batch]
            if registry is None:
                texts = json_values(values, settings.max_width)
            else:
                texts = await asyncio.to_thread(registry, values)
            lines: list[str] = []
            for record, text in zip(batch, texts, strict=True):
                lines += record_lines(topic, record, text, settings.max_width)
                tally.dead_letters += any(name == REASON for name, _ in record.headers)
            tally.records += len(batch)
            write("".join(line + "\n" for line in lines))
            if settings.count and tally.records >= settings.count:
                break
    return tally
