"""The engine's own state, read by health and lag: whether it is stopping (and the
fatal error that stopped it), and its place in the consumer group."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from stream.errors import FatalError, StreamError
from stream.kafka.protocols import TopicPartition

log = logging.getLogger("stream")


class EngineState:
    """Whether the engine is stopping, and the fatal error that stopped it, if any."""

    def __init__(self) -> None:
        self.fatal: StreamError | None = None
        self.stopped = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    def stop(self) -> None:
        self.stopped.set()

    def fail(self, error: BaseException, where: str = "") -> None:
        """Record the first fatal error and stop."""
        if self.fatal is None:
            if not isinstance(error, StreamError):
                error = FatalError(f"{where}: {error!r}" if where else repr(error))
            self.fatal = error
            log.error("stopping: %s", error)
        self.stop()


@dataclass
class Membership:
    """This member's place in its group, for health and lag."""

    rebalancing: bool = True  # until the first assignment
    owned: set[TopicPartition] = field(default_factory=set)
    assigned: asyncio.Event = field(default_factory=asyncio.Event)  # partitions came once
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # the assignment moved
