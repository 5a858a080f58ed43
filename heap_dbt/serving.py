"""Serve an aiohttp app on a local port: on the running loop, or from a thread with a loop of its own.

The Heap emulator runs this way, and so do the tests' fakes (such as the fake dbt Cloud API).
It imports nothing from ``heap_dbt``, so the emulator still runs on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from aiohttp import web


async def start_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (port 0: a free one) on the running loop.

    Returns the runner, whose ``cleanup()`` stops the server, and the base URL, e.g.
    ``http://127.0.0.1:54321``.
    """
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


@contextlib.contextmanager
def serve_in_thread(
    app: web.Application, *, name: str, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve ``app`` from a daemon thread named ``name`` with its own event loop, for callers that
    run no loop (sync tests); yields the base URL and stops the server on exit.

    An error starting the server (a port in use) is raised in the caller's thread.
    """
    ready = threading.Event()
    started: list[str] = []
    failures: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            runner, url = await start_app(app, host, port)
        except BaseException as exc:
            failures.append(exc)
            ready.set()
            return
        started.append(url)
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    ready.wait()
    if failures:
        thread.join()
        raise failures[0]
    try:
        yield started[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
