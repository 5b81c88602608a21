"""Avro object container files: the ``.avro`` files that fastavro, Spark and avro-tools
write (magic bytes, a header with the writer schema and the codec, then blocks of
records). Each record comes out as the value a worker would get from Kafka: its Avro
body, framed in the Confluent wire format under one schema id that stands for the
file's schema. So the worker's own decoder decodes it (:mod:`stream.formats.avro`).

Avro records carry no length: each is walked once here (fastavro's reader) to find
where it ends. A file that is not a container, is cut short or is damaged raises
:class:`NotAContainer`, one line; the header is checked on opening, a block when it is
reached.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from fastavro import block_reader, parse_schema, schemaless_reader

from stream.errors import UsageError
from stream.formats import framing
from stream.formats.registry import RegisteredSchema
from transforms.messages import bounded

MAGIC = b"Obj\x01"
SCHEMA_ID = 1  # stands for the file's writer schema; no registry is asked


class NotAContainer(UsageError):
    """The input is not an Avro object container file, or it is cut short or damaged."""


@dataclass(frozen=True, slots=True)
class Container:
    """An opened container: its writer schema (as a registry would hold it, under
    ``SCHEMA_ID``), and its records, framed, read as they are iterated."""

    schema: RegisteredSchema
    values: Iterator[bytes]


def open_container(handle: BinaryIO) -> Container:
    """Read the header of the container in ``handle`` (a file or a pipe)."""
    head = handle.read(len(MAGIC))
    if head != MAGIC:
        raise NotAContainer(
            f"not an Avro object container file (it starts with {head!r}, not {MAGIC!r})"
        )
    source = _Source(handle, head)
    try:
        blocks = block_reader(cast("IO[bytes]", source))  # it reads and tells: enough
        text = blocks.metadata["avro.schema"]
        parsed = parse_schema(json.loads(text))
    except Exception as exc:  # noqa: BLE001 - whatever a damaged header raises is the file's
        raise NotAContainer(f"the Avro header cannot be read ({_why(exc)})") from None
    schema = RegisteredSchema(SCHEMA_ID, "AVRO", text)
    return Container(schema, _values(blocks, parsed))


def _values(blocks: Iterator[Any], schema: Any) -> Iterator[bytes]:
    header = framing.header(SCHEMA_ID)
    done = 0
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a damaged or cut block is the file's
            raise NotAContainer(
                f"the Avro block after record {done} cannot be read ({_why(exc)})"
            ) from None
        # The block's records, uncompressed (an attribute fastavro's Block has in both of
        # its implementations; its type stub leaves it out).
        data: io.BytesIO = block.bytes_
        body = data.getbuffer()
        for _ in range(block.num_records):
            start = data.tell()
            try:
                schemaless_reader(data, schema, None)
            except Exception as exc:  # noqa: BLE001 - as above
                raise NotAContainer(
                    f"Avro record {done + 1} cannot be read ({_why(exc)})"
                ) from None
            done += 1
            yield header + bytes(body[start : data.tell()])
        if data.tell() != len(body):
            raise NotAContainer(
                f"the Avro block ending at record {done} has "
                f"{len(body) - data.tell()} bytes after its {block.num_records} records"
            )


def _why(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the file is cut short"
    return bounded(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class _Source:
    """``handle`` as fastavro's block reader reads it: ``read`` and ``tell`` (which a pipe
    has not), the magic bytes already read served again first."""

    def __init__(self, handle: BinaryIO, head: bytes) -> None:
        self._handle = handle
        self._head = head
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            data = self._head + self._handle.read()
            self._head = b""
        else:
            data, self._head = self._head[:size], self._head[size:]
            if len(data) < size:
                data += self._handle.read(size - len(data))
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position
