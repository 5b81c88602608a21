"""Where each record of a finished batch goes: pure, no I/O.

A batch and its worker result become output records (the input's key; a null key
keeps its input's partition number) and dead letters (the original key and value,
cut to fit the dead-letter topic, with ``stream.error.*`` and ``stream.source.*``
headers).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.engine.batch import Batch, Routed
from stream.kafka.protocols import OutRecord, TopicPartition
from transforms.messages import bounded
from transforms.reasons import Reason


def refusal(error: str) -> tuple[str, str]:
    """The dead-letter reason and message for a record the broker refused for good."""
    return (
        Reason.OUTPUT_REFUSED.value,
        f"{error}: the broker refused the output for {_refusal_hint(error)}",
    )


def _refusal_hint(error: str) -> str:
    """Why the broker may have said no, for the dead letter's message."""
    if "TooLarge" in error:
        return "good: it is larger than the output topic's max.message.bytes"
    if "Authorization" in error:
        return "good: this user may not write the output topic"
    return "good"


HEADER_REASON = "stream.error.reason"
HEADER_MESSAGE = "stream.error.message"
HEADER_TOPIC = "stream.source.topic"
HEADER_PARTITION = "stream.source.partition"
HEADER_OFFSET = "stream.source.offset"
HEADER_ORIGINAL_SIZE = "stream.error.original-size"  # set when the dead letter is cut

# Bytes a record batch of one record spends beyond key, value and headers (batch
# header 61, record framing up to ~21, header framing up to ~10 each), with room to spare.
RECORD_OVERHEAD = 128
HEADER_OVERHEAD = 16
MESSAGE_LIMIT = 1000  # characters of an error message kept in a header


@dataclass(frozen=True, slots=True)
class Router:
    require_key: bool
    max_record_bytes: int  # a dead letter's value is cut to this at most
    dead_letter_limit: int  # the dead-letter topic's max.message.bytes
    output_limit: int = 1 << 62  # the output topic's max.message.bytes

    def of(self, tp: TopicPartition, batch: Batch) -> Routed:
        """The batch routed by its current plan (routed once per plan, then kept)."""
        if batch.routed is None:
            batch.routed = self.route(tp, batch)
        return batch.routed

    def route(self, tp: TopicPartition, batch: Batch) -> Routed:
        routed = Routed()
        keys, values, plan = batch.keys, batch.values, batch.plan
        result = batch.result.result()
        errors = {index: (reason, message) for index, reason, message in result.errors}
        if result.window is not None:  # a windowed run: records have no outputs of their own
            for index in range(len(values)):
                if index in plan.refused:
                    errors[index] = plan.refused[index]
                if index in errors or (keys[index] is None and self.require_key):
                    self._letter(routed, tp, batch, index, errors.get(index))
            return routed
        refused = plan.refused
        for index, output in enumerate(result.materialize(values)):
            key = keys[index]
            if index in refused:
                errors[index] = refused[index]
            elif key is not None and len(key) + len(values[index] or b"") > self.max_record_bytes:
                errors[index] = (
                    Reason.TOO_LARGE.value,
                    f"key and value are {len(key) + len(values[index] or b'')} bytes, more "
                    f"than the limit of {self.max_record_bytes}",
                )
            elif output is not None and len(output) + len(key or b"") > self._output_room:
                # The broker would refuse it (and a refusal breaks the producer's
                # sequence): a dead letter straight away.
                errors[index] = (
                    Reason.OUTPUT_REFUSED.value,
                    f"MessageSizeTooLargeError: the output is {len(output)} bytes, more than "
                    f"the output topic's max.message.bytes ({self.output_limit}) allows",
                )
            elif output is not None and (key is not None or not self.require_key):
                routed.outputs.append((key, output, None, tp.partition if key is None else None))
                routed.output_index.append(index)
                continue
            self._letter(routed, tp, batch, index, errors.get(index))
        return routed

    def _letter(
        self,
        routed: Routed,
        tp: TopicPartition,
        batch: Batch,
        index: int,
        error: tuple[str, str] | None,
    ) -> None:
        """Record ``index`` of the batch as a dead letter (no error: its key is null)."""
        reason, message = error or (
            Reason.NULL_KEY.value,
            "the record has no key (--require-key is on)",
        )
        routed.errors.append((index, reason, message))
        key, offset, value = batch.keys[index], batch.offsets[index], batch.values[index]
        if index in batch.plan.minimal:
            size = len(value or b"") + len(key or b"")
            letter = self.minimal(tp, offset, reason, size)
        else:
            letter = self.dead_letter(
                tp, offset, key=key, value=value, reason=reason, message=message
            )
        routed.letters.append(letter)
        routed.letter_index.append(index)

    @property
    def _output_room(self) -> int:
        return self.output_limit - RECORD_OVERHEAD

    def fits(self, key: bytes | None, output: bytes) -> bool:
        """Whether an output record of this key fits the output topic."""
        return len(output) + len(key or b"") <= self._output_room

    def dead_letter(
        self,
        tp: TopicPartition,
        offset: int,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        message: str,
    ) -> OutRecord:
        """The original key and value with the reason and source as headers, cut so that
        the whole record fits the dead-letter topic's limit."""
        headers = [
            (HEADER_REASON, reason.encode()),
            (HEADER_MESSAGE, bounded(message, MESSAGE_LIMIT).encode("utf-8", "replace")),
            (HEADER_TOPIC, tp.topic.encode()),
            (HEADER_PARTITION, str(tp.partition).encode()),
            (HEADER_OFFSET, str(offset).encode()),
        ]
        value = value or b""
        size = len(value)
        room = self.dead_letter_limit - RECORD_OVERHEAD - len(key or b"")
        room -= sum(len(name) + len(data) + HEADER_OVERHEAD for name, data in headers)
        room -= len(HEADER_ORIGINAL_SIZE) + 20 + HEADER_OVERHEAD
        if room < 0:
            return self.minimal(tp, offset, reason, size + len(key or b""))
        budget = min(room, self.max_record_bytes)
        if size > budget:
            headers.append((HEADER_ORIGINAL_SIZE, str(size).encode()))
            value = value[:budget]
        return (key, value, headers, tp.partition if key is None else None)

    @staticmethod
    def minimal(tp: TopicPartition, offset: int, reason: str, original_size: int) -> OutRecord:
        """A dead letter of headers only: for a record whose key alone does not fit, or
        whose full dead letter the broker refused."""
        headers = [
            (HEADER_REASON, reason.encode()),
            (HEADER_ORIGINAL_SIZE, str(original_size).encode()),
            (HEADER_TOPIC, tp.topic.encode()),
            (HEADER_PARTITION, str(tp.partition).encode()),
            (HEADER_OFFSET, str(offset).encode()),
        ]
        return (None, b"", headers, tp.partition)
