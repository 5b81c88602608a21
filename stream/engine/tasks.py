"""The background tasks the engine owns.

Every background task is started through ``Tasks.spawn``: if one fails, its error
becomes the engine's fatal error and the engine stops; ``close()`` cancels and awaits
what is left (aiokafka's way: no fire-and-forget task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from stream.engine.state import EngineState

log = logging.getLogger("stream")


class Tasks:
    def __init__(self, state: EngineState) -> None:
        self.state = state
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self.state.fail(error, task.get_name())

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
