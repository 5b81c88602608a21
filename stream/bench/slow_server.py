"""A local HTTP server whose every answer takes ``delay`` seconds, for the benchmark's
lookups: ``with SlowServer(0.05) as base:`` GET ``base + "/sensors/<id>"`` answers
``{"id": ..., "site": "north"}`` in 50 ms, from a process of its own (so the clients
measured do not share its interpreter). ``python -m stream.bench.slow_server DELAY``
is that process: it prints its port and answers until its stdin closes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys


def serve(delay: float) -> None:
    """The server's process: print the port, answer until stdin closes."""
    from aiohttp import web  # noqa: PLC0415 - in the server process only

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.json_response({"id": request.match_info["id"], "site": "north"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/sensors/{id}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=2048).start()
        print(runner.addresses[0][1], flush=True)  # noqa: T201 - the port, to the parent
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    asyncio.run(main())


class SlowServer:
    """``with SlowServer(0.05) as base:`` GET ``base + "/sensors/<id>"`` answers in 50 ms,
    from a process of its own (started with the same interpreter, stopped on exit)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        self._process = process = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "stream.bench.slow_server", str(self.delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            self.__exit__()
            raise RuntimeError("the benchmark's HTTP server did not start")
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._process = None


if __name__ == "__main__":
    serve(float(sys.argv[1]))
