"""Where actions and agents run: in this process (the default) or on a cluster.

A backend is the one seam between orchestration and execution. The executor
and the task manager keep scheduling, retries, timeouts, events and
persistence in the notebook's process and hand each call to
:meth:`Backend.invoke`; a timeout or cancellation arrives there as
cancellation of that await, which a remote backend turns into cancelling the
remote work.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import anyio

if TYPE_CHECKING:
    from dagger_nb.dag.actions import Action
    from dagger_nb.dag.report import NodeOutcome


class Backend(Protocol):
    """Runs one call of a registered function and returns its result."""

    def invoke(
        self, action: Action, kwargs: dict[str, Any], *, outcome: NodeOutcome | None = None
    ) -> Awaitable[Any]:
        """The awaitable of ``action.fn(**kwargs)`` (an ``async def`` method is fine); may record
        where it ran in ``outcome.worker``."""
        ...


class LocalBackend:
    """Runs async functions on the caller's loop and sync ones in a worker thread (or inline)."""

    def invoke(
        self, action: Action, kwargs: dict[str, Any], *, outcome: NodeOutcome | None = None
    ) -> Awaitable[Any]:
        """Call ``action`` here; a blocking sync function never blocks the event loop.

        An async action's own coroutine is returned, not wrapped in another: for a
        trivial node the coroutine layers cost more than the scheduling.
        """
        if action.is_async:
            return action.fn(**kwargs)
        return self._call_sync(action, kwargs)

    async def _call_sync(self, action: Action, kwargs: dict[str, Any]) -> Any:
        if action.inline:
            result = action.fn(**kwargs)
        else:
            # On cancellation (timeout, cancel) the thread is abandoned: Python cannot kill it.
            result = await anyio.to_thread.run_sync(partial(action.fn, **kwargs), abandon_on_cancel=True)
        if inspect.isawaitable(result):
            result = await result
        return result

    def __repr__(self) -> str:
        return "LocalBackend()"


def __getattr__(name: str) -> Any:
    # DaskBackend imports dask: only when asked for.
    if name == "DaskBackend":
        from dagger_nb.backends.dask import DaskBackend

        return DaskBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Backend", "DaskBackend", "LocalBackend"]
