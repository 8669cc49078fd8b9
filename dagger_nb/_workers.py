"""The task group a run's workers live in: anyio semantics at asyncio's price per task.

``anyio.abc.TaskGroup.start_soon`` costs several times what
``asyncio.TaskGroup.create_task`` does, and a run of many parallel nodes starts
all its workers at once: for short nodes that cost alone would rival the work.
So on asyncio the workers live in an
``asyncio.TaskGroup`` held inside an anyio cancel scope: cancelling the scope
(or any enclosing anyio scope, such as the run's timeout) cancels the waiting
group, which cancels and awaits every worker, exactly as an anyio group would.
Other anyio backends get a plain anyio task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio

from dagger_nb._loop import loop_is_running


class WorkerGroup(Protocol):
    """What the scheduler needs from a task group (``anyio.abc.TaskGroup`` satisfies it)."""

    cancel_scope: anyio.CancelScope

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None) -> object:
        """Start ``func(*args)`` as a new task of the group."""
        ...


class _AsyncioWorkerGroup:
    def __init__(self, group: asyncio.TaskGroup, cancel_scope: anyio.CancelScope) -> None:
        self._group = group
        self.cancel_scope = cancel_scope

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None) -> None:
        self._group.create_task(func(*args), name=None if name is None else str(name))


@asynccontextmanager
async def open_worker_group() -> AsyncIterator[WorkerGroup]:
    """A task group that, like anyio's, waits for its tasks and cancels them on error or cancellation.

    >>> async def main():
    ...     done = []
    ...     async def work(n):
    ...         done.append(n)
    ...     async with open_worker_group() as group:
    ...         for n in range(3):
    ...             group.start_soon(work, n)
    ...     return done
    >>> anyio.run(main)
    [0, 1, 2]
    """
    if loop_is_running():
        with anyio.CancelScope() as scope:
            async with asyncio.TaskGroup() as group:
                yield _AsyncioWorkerGroup(group, scope)
    else:
        async with anyio.create_task_group() as anyio_group:
            yield anyio_group
