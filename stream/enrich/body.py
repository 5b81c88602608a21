"""Reading one answer's body with a bound on what it becomes in memory.

The session does not decompress (``auto_decompress=False``): this module does, so the
bound holds for the bytes after decompression, counted while they are made, not after.
A gzip answer of a few KiB that would expand to gigabytes stops at ``limit`` + 1
bytes. The bytes on the wire are bounded by the same limit (Content-Length checked
first, then counted while read).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

ACCEPT_ENCODING = "gzip, deflate"  # what ``decoder`` can undo; nothing else is asked for
_CHUNK = 64 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class TooLarge(Exception):
    """The answer is (or would decompress to) more than the limit."""


class BadEncoding(Exception):
    """The answer's Content-Encoding is unknown, or its compressed bytes are broken."""


async def read_bounded(
    chunks: AsyncIterator[bytes], encoding: str, length: int | None, limit: int
) -> bytes:
    """The body, decompressed as ``encoding`` (a Content-Encoding header, "" for none)
    says; TooLarge as soon as the bytes read or made pass ``limit``."""
    if length is not None and length > limit:
        raise TooLarge
    wbits = _wbits(encoding)
    decoder = zlib.decompressobj(wbits) if wbits is not None else None
    read = made = 0
    out: list[bytes] = []
    async for chunk in chunks:
        read += len(chunk)
        if read > limit:
            raise TooLarge
        if decoder is None:
            out.append(chunk)
            continue
        made = _inflate(decoder, chunk, made, limit, out)
    if decoder is not None:
        try:
            tail = decoder.flush()  # input is all consumed: at most one window left
        except zlib.error as exc:
            raise BadEncoding(f"the {encoding} answer is broken ({exc})") from None
        made += len(tail)
        if made > limit:
            raise TooLarge
        out.append(tail)
        if not decoder.eof:
            raise BadEncoding(f"the {encoding} answer is cut short")
    return b"".join(out)


def _wbits(encoding: str) -> int | None:
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    wbits = _WBITS.get(name)
    if wbits is None:
        raise BadEncoding(f"the answer's Content-Encoding {name[:40]!r} is not gzip or deflate")
    return wbits


def _inflate(
    decoder: zlib._Decompress, chunk: bytes, made: int, limit: int, out: list[bytes]
) -> int:
    """Decompress one chunk, never more than ``limit`` + 1 bytes in all; the new total."""
    data = chunk
    while data:
        try:
            piece = decoder.decompress(data, limit - made + 1)
        except zlib.error as exc:
            raise BadEncoding(f"the compressed answer is broken ({exc})") from None
        made += len(piece)
        if made > limit:
            raise TooLarge
        out.append(piece)
        data = decoder.unconsumed_tail
        if decoder.eof:
            break
    return made
