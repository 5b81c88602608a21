"""``stream lookup-demo``: a small lookup service to try enrichment against.

``GET /sensors/{sensor_id}`` answers, for an id of the demo events' form
(``sensor-0007``), a JSON object that follows from the id alone, so every run and
every reader sees the same answer::

    {"sensor_id": "sensor-0007", "site": "east-yard", "owner": "team-b"}

Any other id is a 404 (what ``--enrich-missing`` decides about). It listens on
loopback by default and stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import errno
import re
import signal
from collections.abc import Callable

from aiohttp import web

from stream.errors import PortUnavailable

PATH = "/sensors/{sensor_id}"
DEMO_ID = re.compile(r"^sensor-([0-9]{1,9})$")
SITES = ("north-hall", "south-hall", "east-yard", "west-yard", "roof")
OWNERS = ("team-a", "team-b", "team-c")


def lookup(sensor_id: str) -> dict[str, str] | None:
    """The demo's answer for ``sensor_id``, or None when the id is not of the demo's form."""
    found = DEMO_ID.match(sensor_id)
    if found is None:
        return None
    number = int(found.group(1))
    return {
        "sensor_id": sensor_id,
        "site": SITES[number % len(SITES)],
        "owner": OWNERS[number % len(OWNERS)],
    }


async def _sensor(request: web.Request) -> web.Response:
    answer = lookup(request.match_info["sensor_id"])
    if answer is None:
        return web.json_response({"error": "no such sensor"}, status=404)
    return web.json_response(answer)


def make_app() -> web.Application:
    """The demo's web application (one route)."""
    app = web.Application()
    app.router.add_get(PATH, _sensor)
    return app


async def serve(host: str, port: int, announce: Callable[[str], None]) -> int:
    """Serve until SIGINT or SIGTERM; ``announce`` gets the line saying where (the port
    actually bound when ``port`` is 0). A port that cannot be bound is
    :class:`PortUnavailable` (one line). Returns the exit code, 0."""
    runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise PortUnavailable(
                f"cannot listen on {host}:{port}: {why}; choose another --port"
            ) from None
        bound = _bound_port(runner, port)
        shown = f"[{host}]" if ":" in host else host
        announce(
            f"lookup-demo: serving http://{shown}:{bound}{PATH} (for example "
            f"/sensors/sensor-0001); Ctrl-C stops it"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        await runner.cleanup()
    return 0


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    """The port the server listens on (the one the system chose when ``asked`` is 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked
