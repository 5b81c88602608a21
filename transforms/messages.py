"""The bound on an error message: every part that writes one into a dead letter, a log
line or a header cuts it here, the same way.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_MESSAGE_CHARS", "bounded"]

MAX_MESSAGE_CHARS: Final = 500
"""Upper bound on the length of a record's error message (:attr:`BadRecord.message`)."""


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with ``...``."""
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."
