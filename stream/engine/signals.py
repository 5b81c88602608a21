"""Running an engine as a process: SIGTERM/SIGINT, and an end that always comes.

The first signal drains and stops (uvicorn's way); a second exits at once; and a
watchdog thread ends the process if the shutdown outlives the drain timeout plus a
grace, killing the workers first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading

from stream.config import RunSettings
from stream.engine.runner import Engine

log = logging.getLogger("stream")

SHUTDOWN_GRACE = 14.0  # seconds past the drain timeout before the process exits anyway


def _force_exit(engine: Engine, after: float) -> None:
    """The last resort, from a thread (the event loop may be what is stuck)."""
    log.error("shutdown took longer than %gs; exiting now", after)
    for pid in engine.pool.pids() if engine.pool is not None else []:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os._exit(1)


async def serve(settings: RunSettings) -> None:
    """Run an engine until SIGTERM/SIGINT: the first drains and stops, a second exits at once."""
    engine = Engine(settings)
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    watchdogs: list[threading.Timer] = []

    def on_signal(signum: int) -> None:
        seen.append(signum)
        if len(seen) == 1:
            log.info(
                "%s: stopping (drain up to %gs; send it again to exit at once)",
                signal.Signals(signum).name,
                settings.drain_timeout,
            )
            engine.stop()
            # Whatever happens, the process ends within the drain timeout plus this.
            limit = settings.drain_timeout + SHUTDOWN_GRACE
            watchdog = threading.Timer(limit, _force_exit, (engine, limit))
            watchdog.daemon = True
            watchdog.start()
            watchdogs.append(watchdog)
        else:
            log.warning("second signal: exiting now without draining")
            os._exit(130)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await engine.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for watchdog in watchdogs:
            watchdog.cancel()
