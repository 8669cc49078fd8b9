"""A task group that lives on a running event loop, for work started from synchronous calls.

``executor.start(...)`` must return at once from a notebook cell, yet every run
needs an owner that awaits or cancels it. :class:`BackgroundGroup` is that
owner: one long-lived service task per event loop runs an anyio task group, and
:meth:`submit` hands it work through a memory stream. :meth:`aclose` cancels
everything still running and waits for it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from dagger_nb.errors import ExecutionError


class BackgroundGroup:
    """Owns background work started from synchronous code on the running loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._service: asyncio.Task[None] | None = None
        self._group: TaskGroup | None = None
        self._send: Any = None

    def submit(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the background on the calling thread's running loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ExecutionError(
                f"{self.name}: starting work in the background needs a running event loop "
                "(a notebook cell or async code); in a plain script use the synchronous form"
            ) from None
        if self._service is None or self._service.done() or self._loop is not loop:
            self._send, receive = anyio.create_memory_object_stream[tuple[Any, tuple[Any, ...]]](math.inf)
            self._loop = loop
            # The one bare task: it owns a task group, which owns every background run.
            self._service = loop.create_task(self._serve(receive), name=f"dagger-nb {self.name}")
        self._send.send_nowait((fn, args))

    async def _serve(self, receive: Any) -> None:
        async with receive, anyio.create_task_group() as group:
            self._group = group
            async for fn, args in receive:
                group.start_soon(fn, *args)
        self._group = None

    async def aclose(self) -> None:
        """Cancel all background work and wait until it has ended."""
        service, self._service = self._service, None
        if service is None or service.done():
            return
        if self._group is not None:
            self._group.cancel_scope.cancel()
        self._send.close()
        await asyncio.wait([service])
