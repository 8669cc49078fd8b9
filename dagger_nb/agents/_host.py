"""The task group that owns the jobs a :class:`TaskManager` started in the background on one loop."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

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
