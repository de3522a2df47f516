"""Blocking DNS provider calls off the event loop, in daemon threads that a stopping process never waits for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """The controller is stopping: a Route 53 backoff sleep was cut short (the batch is re-read at the next start)."""


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking call in a daemon thread: a process told to stop never waits for a Route 53 call to end."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the process is exiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="trafficd-dns", daemon=True).start()
    return await future
