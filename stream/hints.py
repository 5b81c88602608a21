"""Hints for a service that runs but does nothing useful: pure decisions, no I/O.

``DeadLetterStreak`` watches finished batches; when record after record is
dead-lettered for one reason (``--kind matrix`` events sent to a ``sensor-features``
service, JSON sent to an Avro service), it returns one warning line naming the reason
and the option most likely wrong, at most once per ``interval`` seconds. A single bad
record among good ones, or a few, says nothing: the streak must reach ``min_records``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from transforms.messages import bounded
from transforms.reasons import KNOWN, Reason

MIN_RECORDS = 10  # records in a row, all dead-lettered for one reason, before a warning
INTERVAL = 60.0  # seconds between two warnings


class RunOptions(Protocol):
    """What the hints name: ``stream run``'s settings have these."""

    @property
    def transform(self) -> str: ...
    @property
    def input_format(self) -> str: ...
    @property
    def dead_letter_topic(self) -> str: ...


class DeadLetterStreak:
    """``observe`` each finished batch (its size and its dead letters' reasons, with the
    clock's time); a line to log as a warning when every record for a while failed
    alike, else None."""

    def __init__(
        self,
        transform: str,
        input_format: str,
        dead_letter_topic: str,
        *,
        min_records: int = MIN_RECORDS,
        interval: float = INTERVAL,
    ) -> None:
        self.transform = transform
        self.input_format = input_format
        self.dead_letter_topic = dead_letter_topic
        self.min_records = min_records
        self.interval = interval
        self._reason = ""
        self._streak = 0  # records in a row dead-lettered for self._reason
        self._warned_at: float | None = None

    @classmethod
    def of(cls, settings: RunOptions) -> DeadLetterStreak:
        return cls(settings.transform, settings.input_format, settings.dead_letter_topic)

    def observe(self, count: int, reasons: Sequence[str], now: float) -> str | None:
        if count == 0:
            return None
        if len(reasons) < count or any(r != reasons[0] for r in reasons):
            self._reason, self._streak = "", 0  # a record went through, or reasons differ
            return None
        if reasons[0] != self._reason:
            self._reason, self._streak = reasons[0], 0
        self._streak += count
        if self._streak < self.min_records:
            return None
        if self._warned_at is not None and now - self._warned_at < self.interval:
            return None
        self._warned_at = now
        # A transform names reasons of its own: shown quoted and cut, as a header would be.
        reason = self._reason if self._reason in KNOWN else repr(bounded(self._reason, 64))
        return (
            f"all of the last {self._streak} records were dead-lettered (reason "
            f"{reason}): {self.hint(self._reason)} (see them with "
            f"`stream read {self.dead_letter_topic}`)"
        )

    def hint(self, reason: str) -> str:
        """The question to ask for records that all fail for ``reason``."""
        fmt = f"--input-format {self.input_format}"
        by_reason = {
            Reason.INVALID_JSON: f"is {fmt} right for this input?",
            Reason.INVALID_UTF8: f"is {fmt} right for this input?",
            Reason.DECODE_ERROR: f"is {fmt} right for this input?",
            Reason.BAD_FRAMING: f"{fmt} reads the Schema Registry's wire format: is that "
            "what the producers write?",
            Reason.UNKNOWN_SCHEMA: "does --schema-registry-url name the registry the "
            "producers use (Apicurio answers under /apis/ccompat/v7)?",
            Reason.SCHEMA_REFUSED: "does --schema-registry-url name a Confluent-compatible "
            "registry that lets this user read the schemas?",
            Reason.NULL_KEY: "the records have no key: should --require-key be off?",
            Reason.EMPTY: "the records are empty: is the producer writing what it should?",
            Reason.TOO_LARGE: "the records are larger than --max-record-bytes",
            Reason.ENCODE_ERROR: "does the transform's output fit --output-format?",
            Reason.OUTPUT_TOO_LARGE: "the transform's outputs are too large for the output topic",
            Reason.OUTPUT_REFUSED: "does the output topic take these outputs (its "
            "max.message.bytes, this user's write ACL)?",
            Reason.ENRICH_FAILED: "does the lookup service of --enrich-url answer?",
            Reason.ENRICH_REFUSED: "do the records' values fit --enrich-url's path?",
            Reason.SINK_REFUSED: "does the table fit the transform's outputs (`stream db "
            "init` with the same --transform)?",
            Reason.WORKER_CRASH: f"does --transform {self.transform} crash on this input?",
            Reason.WORKER_TIMEOUT: f"does --transform {self.transform} hang on this input "
            "(--batch-timeout)?",
        }
        known = {r.value: text for r, text in by_reason.items()}
        return known.get(reason, f"is --transform {self.transform} right for this input?")
