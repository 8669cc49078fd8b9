"""Where actions and agents run: in this process (the default) or on a cluster.

A backend is the one seam between orchestration and execution. The executor
and the task manager keep scheduling, retries, timeouts, events and
persistence in the notebook's process and hand each call to
:meth:`Backend.invoke`: a :class:`~dagger_nb._callables.Callee` (a workflow's
action, a task agent's runner) and its arguments. A timeout or cancellation
arrives there as cancellation of that await, which a remote backend turns into
cancelling the remote work. Backends know nothing of workflows or jobs: this
package imports neither ``dagger_nb.dag`` nor ``dagger_nb.agents``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterable, Mapping
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, Protocol, runtime_checkable

import anyio

from dagger_nb._callables import Callee, OutputPrints, RemoteContext


class WhereRan(Protocol):
    """What a backend tells about a call: where it ran (a Dask worker's address), when it knows."""

    worker: str | None


@runtime_checkable
class Backend(Protocol):
    """Runs one call of a function and returns its result (the DAG's and the task agents' seam)."""

    def invoke(
        self,
        callee: Callee,
        kwargs: Mapping[str, Any] | None = None,
        *,
        args: tuple[Any, ...] = (),
        context: RemoteContext | None = None,
        outcome: WhereRan | None = None,
    ) -> Awaitable[Any]:
        """The awaitable of ``callee.fn(*args, **kwargs)`` (an ``async def`` method is fine).

        ``context`` describes the context argument among ``kwargs``, for a backend
        that runs the call in another process and so passes a copy (see
        :class:`~dagger_nb._callables.RemoteContext`); one that runs it here ignores
        it. The backend may record where the call ran in ``outcome.worker``.

        A backend whose class sets ``fingerprints_outputs = True`` also takes a
        keyword ``prints`` (a :class:`~dagger_nb._callables.OutputPrints`) and fills
        it with the fingerprints of the result's big outputs, computed where they are.
        """
        ...


@runtime_checkable
class SendsAhead(Protocol):
    """A backend that can submit a call before its inputs exist, naming the calls that make them.

    The executor then sends a node as soon as every dependency is sent (not
    done): the cluster starts it when they finish, without a round trip through
    the notebook; the calls of one scheduling step go in one :meth:`batch`.
    :class:`DaskBackend` is one; the executor's side is in ``dagger_nb/dag/ahead.py``.
    A backend lacking any of these methods is run through :meth:`Backend.invoke` only.
    """

    async def prepare(self) -> None:
        """Called once per run before the first :meth:`send`."""
        ...

    def can_send(self, action: Callee) -> bool:
        """Whether ``action`` can go through :meth:`send` (else :meth:`Backend.invoke` runs it)."""
        ...

    def send(
        self,
        action: Callee,
        kwargs: dict[str, Any],
        *,
        after: Any = None,
        picks: tuple[Any, ...] = (),
        batch: Any = None,
    ) -> Any:
        """Submit the call (now, or with ``batch`` when it ends) and return a handle for :meth:`receive`."""
        ...

    def batch(self) -> AbstractContextManager[Any]:
        """A batch for :meth:`send`: its calls are submitted together when the ``with`` block ends."""
        ...

    def receive(self, sent: Any, *, outcome: WhereRan | None = None) -> Awaitable[Any]:
        """The call's result; cancelling the await cancels the call."""
        ...

    async def discard(self, calls: Iterable[Any]) -> None:
        """Cancel calls that will never be received."""
        ...


class LocalBackend:
    """Runs async functions on the caller's loop and sync ones in a worker thread (or inline)."""

    def invoke(
        self,
        callee: Callee,
        kwargs: Mapping[str, Any] | None = None,
        *,
        args: tuple[Any, ...] = (),
        context: RemoteContext | None = None,
        outcome: WhereRan | None = None,
    ) -> Awaitable[Any]:
        """Call ``callee`` here, its context as given; a blocking sync function never blocks the
        event loop.

        An async function's own coroutine is returned, not wrapped in another: for a
        trivial node the coroutine layers cost more than the scheduling.
        """
        kwargs = {} if kwargs is None else kwargs
        if callee.is_async:
            return callee.fn(*args, **kwargs)
        return self._call_sync(callee, args, kwargs)

    async def _call_sync(self, callee: Callee, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        if callee.inline:
            result = callee.fn(*args, **kwargs)
        else:
            # On cancellation (timeout, cancel) the thread is abandoned: Python cannot kill it.
            result = await anyio.to_thread.run_sync(partial(callee.fn, *args, **kwargs), abandon_on_cancel=True)
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


__all__ = [
    "Backend", "Callee", "DaskBackend", "LocalBackend", "OutputPrints", "RemoteContext", "SendsAhead", "WhereRan",
]
