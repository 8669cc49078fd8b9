"""A task group that lives on a running event loop, for work started from synchronous calls.

``executor.start(...)`` must return at once from a notebook cell, yet every run
needs an owner that awaits or cancels it. :class:`BackgroundGroup` is that
owner: one long-lived service task per event loop runs an anyio task group, and
:meth:`submit` hands it work through a memory stream. :meth:`aclose` cancels
everything still running and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

from dagger_nb.errors import ExecutionError

logger = logging.getLogger("dagger_nb")


async def _guarded(fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except Exception:  # the work records its own failures; this is a bug, and siblings must go on
        logger.exception("dagger-nb background work %s failed", getattr(fn, "__qualname__", fn))


class BackgroundGroup:
    """Owns background work started from synchronous code on the running loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._service: asyncio.Task[None] | None = None
        self._group: TaskGroup | None = None
        self._pending: list[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...], Callable[[], object]]] = []
        self._wakeup: anyio.Event | None = None

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, on_drop: Callable[[], object] = lambda: None
    ) -> None:
        """Run ``fn(*args)`` in the background on the calling thread's running loop.

        ``on_drop`` is called instead if the group is closed before ``fn`` could start.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ExecutionError(
                f"{self.name}: starting work in the background needs a running event loop "
                "(a notebook cell or async code); in a plain script use the synchronous form"
            ) from None
        if self._service is None or self._service.done() or self._loop is not loop:
            self._loop = loop
            self._pending = []
            self._wakeup = None
            self._group = None
            # The one bare task: it owns a task group, which owns every background run.
            self._service = loop.create_task(self._serve(), name=f"dagger-nb {self.name}")
        self._pending.append((fn, args, on_drop))
        if self._wakeup is not None:
            self._wakeup.set()

    async def _serve(self) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            while True:
                while self._pending:
                    fn, args, _ = self._pending.pop(0)
                    group.start_soon(_guarded, fn, args)
                self._wakeup = anyio.Event()
                await self._wakeup.wait()

    async def aclose(self) -> None:
        """Cancel all background work and wait until it has ended."""
        service, self._service = self._service, None
        if service is None or service.done():
            return
        if self._group is not None:
            self._group.cancel_scope.cancel()
        else:
            service.cancel()
        await asyncio.wait([service])
        dropped, self._pending = self._pending, []
        for _, _, on_drop in dropped:
            on_drop()
