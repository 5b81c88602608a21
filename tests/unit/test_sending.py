"""The sending layer alone: what ``learn`` makes of each refusal, the bounded refusal
loop ``until_accepted``, routing made once per plan, and produce batches split around
the records a plan sends alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from stream.engine.assignment import Assignment
from stream.engine.batch import Batch
from stream.engine.progress import Progress
from stream.engine.routing import HEADER_REASON, Router
from stream.engine.sending import (
    MAX_TRIES,
    Failures,
    Refusals,
    Sender,
    Shipped,
    learn,
    settle,
    until_accepted,
)
from stream.errors import FatalError, KafkaFailure, ProducerBroken, RecordRefused
from stream.flow import InFlight
from stream.kafka.protocols import OutRecord, Producer, Sent, TopicPartition
from stream.metrics import Metrics
from stream.offsets import Ticket
from stream.worker import BatchResult

TP = TopicPartition("in", 0)
TOO_LARGE = RecordRefused("MessageSizeTooLargeError", "MessageSizeTooLargeError: refused")


def batch(n: int = 4, errors: list[tuple[int, str, str]] | None = None) -> Batch:
    """A finished batch of ``n`` records (values ``{"n": i}``, keys ``k<i>``)."""
    result: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    result.set_result(BatchResult(None, errors or [], 0.001, 0))
    values: list[bytes | None] = [b'{"n": %d}' % i for i in range(n)]
    return Batch(
        ticket=Ticket(100, 100 + n, n, 0.0),
        keys=[b"k%d" % i for i in range(n)],
        values=values,
        offsets=list(range(100, 100 + n)),
        timestamps_ms=[0] * n,
        nbytes=sum(len(v or b"") for v in values),
        result=result,
    )


def shipped(*records: int, letters: bool = False) -> Shipped:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    return Shipped(Sent(future, list(range(len(records)))), list(records), letters)


ROUTER = Router(require_key=False, max_record_bytes=1000, dead_letter_limit=10_000)


# ---- learn -------------------------------------------------------------------------------


async def test_a_refused_produce_batch_of_several_records_sends_each_alone() -> None:
    b = batch()
    learn(b, [(shipped(0, 1, 2), TOO_LARGE)])
    assert b.plan.alone == {0, 1, 2}
    assert b.plan.refused == {}  # none of them is blamed yet
    assert b.plan.minimal == set()


async def test_a_refused_output_becomes_a_dead_letter_with_reason_output_refused() -> None:
    b = batch()
    ROUTER.of(TP, b)
    learn(b, [(shipped(2), TOO_LARGE)])
    assert 2 in b.plan.alone
    reason, message = b.plan.refused[2]
    assert reason == "output_refused"
    assert "MessageSizeTooLargeError" in message
    assert b.routed is None  # routed again by the new plan
    routed = ROUTER.of(TP, b)
    assert routed.output_index == [0, 1, 3]
    assert routed.letter_index == [2]
    assert dict(routed.letters[0][2] or [])[HEADER_REASON] == b"output_refused"


async def test_a_topic_refusing_this_user_makes_every_output_a_dead_letter_at_once() -> None:
    b = batch(5, errors=[(4, "invalid_json", "not JSON")])
    ROUTER.of(TP, b)
    denied = RecordRefused("TopicAuthorizationFailedError", "not authorised")
    learn(b, [(shipped(1), denied)])
    assert set(b.plan.refused) == {0, 1, 2, 3}  # the topic's refusal, not the record's
    assert {reason for reason, _ in b.plan.refused.values()} == {"output_refused"}
    routed = ROUTER.of(TP, b)
    assert routed.outputs == []
    assert routed.letter_index == [0, 1, 2, 3, 4]


async def test_a_refused_dead_letter_becomes_a_minimal_one() -> None:
    b = batch()
    b.refuse(1, "output_refused", "too large")
    ROUTER.of(TP, b)
    learn(b, [(shipped(1, letters=True), TOO_LARGE)])
    assert b.plan.minimal == {1}
    assert 1 in b.plan.alone
    assert b.routed is None
    (letter,) = ROUTER.of(TP, b).letters
    assert letter[0] is None  # headers only
    assert letter[1] == b""


async def test_a_refused_minimal_dead_letter_is_fatal() -> None:
    b = batch()
    b.refuse(1, "output_refused", "too large")
    b.plan.minimal.add(1)
    with pytest.raises(FatalError, match="minimal dead letter"):
        learn(b, [(shipped(1, letters=True), TOO_LARGE)])


async def test_a_failure_that_is_not_a_refusal_is_raised() -> None:
    b = batch()
    timeout = KafkaFailure("KafkaTimeoutError: not acknowledged in time")
    with pytest.raises(KafkaFailure) as raised:
        learn(b, [(shipped(0), timeout)])
    assert raised.value is timeout
    assert not b.plan  # nothing learnt from it
    with pytest.raises(KafkaFailure, match="RuntimeError"):
        learn(b, [(shipped(0), RuntimeError("boom"))])


async def test_a_broken_producer_s_sends_are_sent_again_as_they_were() -> None:
    b = batch()
    learn(b, [(shipped(0, 1), ProducerBroken("OutOfOrderSequenceNumber"))])
    assert not b.plan


async def test_learn_goes_through_every_failure_of_a_batch() -> None:
    b = batch(6)
    failed: Failures = [
        (shipped(0, 1), ProducerBroken("OutOfOrderSequenceNumber")),
        (shipped(2, 3), TOO_LARGE),
        (shipped(4), TOO_LARGE),
    ]
    learn(b, failed)
    assert b.plan.alone == {2, 3, 4}
    assert set(b.plan.refused) == {4}


# ---- until_accepted ----------------------------------------------------------------------


class Rounds:
    """``renew`` and ``again`` for ``until_accepted``: each round answers the next of
    ``answers`` (what was refused again)."""

    def __init__(self, *answers: Refusals) -> None:
        self.answers = list(answers)
        self.renewed = 0
        self.sent: list[Refusals] = []

    async def renew(self) -> Producer:
        self.renewed += 1
        return NullProducer()

    async def again(self, _producer: Producer, refused: Refusals) -> Refusals:
        self.sent.append(refused)
        return self.answers.pop(0) if self.answers else []


class NullProducer:
    async def send(self, topic: str, records: Sequence[OutRecord]) -> list[Sent]:
        return []

    async def stop(self) -> None:
        return None


async def test_no_refusals_return_at_once() -> None:
    rounds = Rounds()
    await until_accepted([], rounds.renew, rounds.again)
    assert rounds.renewed == 0
    assert rounds.sent == []


async def test_refusals_are_learnt_from_and_sent_again_on_a_new_producer() -> None:
    b = batch()
    first: Refusals = [(b, [(shipped(0, 1), TOO_LARGE)])]
    second: Refusals = [(b, [(shipped(1), TOO_LARGE)])]
    rounds = Rounds(second, [])
    await until_accepted(first, rounds.renew, rounds.again)
    assert rounds.renewed == 2
    assert rounds.sent == [first, second]
    assert b.plan.alone == {0, 1}
    assert set(b.plan.refused) == {1}


async def test_refusals_stop_after_max_tries_with_a_kafka_failure() -> None:
    b = batch()

    def broken() -> Refusals:
        return [(b, [(shipped(0), ProducerBroken("OutOfOrderSequenceNumber"))])]

    rounds = Rounds(*(broken() for _ in range(10)))
    with pytest.raises(KafkaFailure, match=f"after {MAX_TRIES} tries"):
        await until_accepted(broken(), rounds.renew, rounds.again)
    assert rounds.renewed == MAX_TRIES
    assert len(rounds.sent) == MAX_TRIES


async def test_what_cannot_be_learnt_from_ends_the_loop_before_a_new_producer() -> None:
    b = batch()
    rounds = Rounds()
    with pytest.raises(KafkaFailure, match="not acknowledged"):
        await until_accepted(
            [(b, [(shipped(0), KafkaFailure("not acknowledged"))])], rounds.renew, rounds.again
        )
    assert rounds.renewed == 0


async def test_settle_returns_the_failed_produce_batches_with_their_errors() -> None:
    ok, refused, pending = shipped(0), shipped(1), shipped(2)
    ok.sent.future.set_result(None)
    refused.sent.future.set_exception(TOO_LARGE)
    waiting = asyncio.ensure_future(settle([ok, refused, pending]))
    await asyncio.sleep(0)
    assert not waiting.done()  # every produce batch is awaited
    pending.sent.future.set_result(None)
    assert await waiting == [(refused, TOO_LARGE)]


# ---- routing once per plan ---------------------------------------------------------------


async def test_a_batch_is_routed_once_per_plan() -> None:
    b = batch(3, errors=[(1, "invalid_json", "not JSON")])
    routed = ROUTER.of(TP, b)
    assert ROUTER.of(TP, b) is routed
    assert routed.output_index == [0, 2]
    assert routed.letter_index == [1]
    b.refuse(0, "output_refused", "too large")
    again = ROUTER.of(TP, b)
    assert again is not routed
    assert ROUTER.of(TP, b) is again
    assert again.output_index == [2]
    assert again.letter_index == [0, 1]


# ---- produce batches around records sent alone -------------------------------------------


class Recording:
    """A producer that queues each call's records as one produce batch."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[OutRecord]]] = []

    async def send(self, topic: str, records: Sequence[OutRecord]) -> list[Sent]:
        if not records:
            return []
        self.calls.append((topic, list(records)))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return [Sent(future, list(range(len(records))))]

    async def stop(self) -> None:
        return None


def sender() -> Sender:
    return Sender(ROUTER, "out", "in.dlq")


def progress() -> Progress:
    return Progress(Metrics("identity", "in", "out", "in.dlq"), "in", "out", "in.dlq")


async def test_records_a_plan_sends_alone_get_produce_batches_of_their_own() -> None:
    part = Assignment(InFlight(100, 1 << 20), progress()).add(TP)
    b = batch(5)
    b.plan.alone.add(2)
    producer = Recording()
    sent = await sender().send(producer, part, b)
    assert [s.records for s in sent] == [[0, 1], [2], [3, 4]]
    assert all(not s.letters for s in sent)
    assert [len(records) for _, records in producer.calls] == [2, 1, 2]


async def test_only_the_records_named_are_sent_again_outputs_then_dead_letters() -> None:
    part = Assignment(InFlight(100, 1 << 20), progress()).add(TP)
    b = batch(5)
    b.refuse(3, "output_refused", "too large")
    producer = Recording()
    sent = await sender().send(producer, part, b, only={1, 3, 4})
    assert [(s.records, s.letters) for s in sent] == [([1, 4], False), ([3], True)]
    assert [topic for topic, _ in producer.calls] == ["out", "in.dlq"]
    assert b.errors == [(3, "output_refused", "too large")]
