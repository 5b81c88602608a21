"""Exactly-once with a long --drain-timeout on a real broker: the transactional
producers ask for a transaction timeout the broker accepts (issue 20, item 10)."""

from __future__ import annotations

import pytest

from tests.helpers import Service, Topics, feed_demo, read_topic, start_service

pytestmark = pytest.mark.broker


async def test_exactly_once_with_a_drain_timeout_past_the_brokers_transaction_limit(
    topics: Topics, services: list[Service]
) -> None:
    # Twice --drain-timeout 500 is 1000 s, over the broker's default
    # transaction.max.timeout.ms (900 s): every producer was refused at start
    # ("InvalidTransactionTimeout"), exit 1, on every restart.
    count = 200
    await feed_demo(topics, count)
    service = start_service(topics, "--guarantee", "exactly-once", "--drain-timeout", "500")
    services.append(service)
    records = await read_topic(topics.bootstrap, topics.output, count, wait=60)
    assert len(records) == count, service.log()
    assert service.terminate() == 0, service.log()
    assert "InvalidTransactionTimeout" not in service.log()
