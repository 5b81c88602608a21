"""aiokafka's exceptions, turned into the engine's (``stream.errors``)."""

from __future__ import annotations

from aiokafka.errors import (
    CorruptRecordException,
    IllegalOperation,
    IllegalStateError,
    InvalidProducerEpoch,
    InvalidTimestampError,
    InvalidTxnState,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
)

from stream.errors import (
    KafkaFailure,
    NotAuthorized,
    OwnershipLost,
    ProducerBroken,
    RecordRefused,
    UnknownTopic,
)

# Refused for good: the same records would be refused again.
_REFUSED = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
    TopicAuthorizationFailedError,
)
# The producer lost its transactional id to a newer one, or its transaction expired.
_LOST = (ProducerFenced, InvalidProducerEpoch, InvalidTxnState, UnknownProducerId)
# Raised by aiokafka's transaction manager when the producer is in a state it cannot
# leave (FATAL_ERROR after a fence): only a new producer helps.
_STATE = (IllegalOperation, IllegalStateError, AssertionError)

CAUGHT = (KafkaError, *_STATE)  # what a wrapper around an aiokafka call catches


def translate(error: BaseException) -> KafkaFailure | NotAuthorized:
    """The engine's view of an aiokafka error."""
    name = type(error).__name__
    if isinstance(error, _REFUSED):
        return RecordRefused(name, f"{name}: {error}")
    if isinstance(error, OutOfOrderSequenceNumber):
        return ProducerBroken(f"{name}: {error}")
    if isinstance(error, TransactionalIdAuthorizationFailed):
        return NotAuthorized(
            "not authorised to use the transactional id (an ACL on TransactionalId is "
            f"needed for exactly-once): {error}"
        )
    if isinstance(error, (*_LOST, *_STATE)):
        return OwnershipLost(f"{name}: {error}")
    kind = UnknownTopic if isinstance(error, UnknownTopicOrPartitionError) else KafkaFailure
    failure = kind(f"{name}: {error}")
    failure.retriable = bool(getattr(error, "retriable", True))
    return failure
