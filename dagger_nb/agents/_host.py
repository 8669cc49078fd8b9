"""Where a :class:`TaskManager`'s jobs run: the task group of background jobs, and the hop to their loop."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

T = TypeVar("T")

_Job = Callable[[], Coroutine[Any, Any, None]]


class _Host:
    """Owns the jobs started in the background on one event loop, in one task group."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._send, self._receive = anyio.create_memory_object_stream[_Job](math.inf)
        self._scope: anyio.CancelScope | None = None
        self._accepting = True
        self._task = loop.create_task(self._main(), name="dagger-nb task jobs")

    async def _main(self) -> None:
        with self._receive:
            async with anyio.create_task_group() as group:
                self._scope = group.cancel_scope
                async for job in self._receive:
                    group.start_soon(job)

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        """True when this host runs on ``loop`` and still accepts jobs."""
        return self.loop is loop and self._accepting and not self._task.done()

    def submit(self, job: _Job) -> None:
        """Run ``job()`` in the host's task group."""
        self._send.send_nowait(job)

    def close(self) -> None:
        """Stop accepting jobs and cancel the running ones (without waiting)."""
        self._accepting = False
        self._send.close()
        if self._scope is not None:
            self._scope.cancel()
        else:
            self._task.cancel()

    async def aclose(self) -> None:
        """Cancel the running jobs and wait until they ended."""
        self.close()
        if asyncio.get_running_loop() is not self.loop:
            return
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise


class LoopHop:
    """Carries calls from worker threads (sync agents) to the thread of the loop the jobs run on.

    Every job run enters it while it runs and leaves it when it ends; with no
    run under way, or on the loop's own thread, a call runs where it is made.
    """

    __slots__ = ("_thread", "_token", "_users")

    def __init__(self) -> None:
        self._users = 0
        self._thread: int | None = None
        self._token: Any = None

    def enter(self) -> None:
        """A job run starts on the current loop."""
        self._users += 1
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()

    def leave(self) -> None:
        """A job run ended."""
        self._users -= 1
        if self._users == 0:
            self._thread = self._token = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the running jobs' loop thread."""
        if self._token is None or threading.get_ident() == self._thread:
            return fn(*args)
        return anyio.from_thread.run_sync(fn, *args, token=self._token)


def cancel_everywhere(host: _Host | None, cancels: list[Callable[[], None]]) -> None:
    """Close ``host`` and call ``cancels``: on the host's loop thread when called from another
    (cancel scopes belong to their loop's thread), else at once."""

    def cancel() -> None:
        if host is not None:
            host.close()
        for run_cancel in cancels:
            run_cancel()

    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if host is not None and host.loop is not here and host.loop.is_running():
        host.loop.call_soon_threadsafe(cancel)
    else:
        cancel()
