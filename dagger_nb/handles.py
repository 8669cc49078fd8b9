"""The contract every background run honours: a DAG run, a task-agent job, pub/sub delivery.

``x.start(...)`` returns a handle at once; whatever the paradigm, the caller uses
it the same way::

    handle = executor.start("pipeline")      # or manager.start(job_id), pubsub.start()
    handle.status                           # a StrEnum: "running", then how it ended
    report = await handle                   # same as await handle.wait()
    handle.cancel()
    async for event in handle.subscribe(): ...

:class:`Handle` is a :class:`typing.Protocol`: ``RunHandle``, ``JobHandle`` and
``PubSubHandle`` satisfy it without inheriting from it, and
``isinstance(h, Handle)`` checks that they do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable

ReportT_co = TypeVar("ReportT_co", covariant=True)
EventT_co = TypeVar("EventT_co", covariant=True)

__all__ = ["Handle"]


@runtime_checkable
class Handle(Protocol[ReportT_co, EventT_co]):
    """A run started in the background: its status, its report, its events, and a way to stop it."""

    @property
    def status(self) -> StrEnum:
        """Where the run stands: a ``StrEnum`` per paradigm (it compares equal to its string value)."""
        ...

    @property
    def done(self) -> bool:
        """True once the run has ended, however it ended."""
        ...

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the run when it failed as a whole, else None."""
        ...

    async def wait(self) -> ReportT_co:
        """Wait for the end of the run and return its report."""
        ...

    def __await__(self) -> Generator[Any, None, ReportT_co]:
        """``await handle`` is ``await handle.wait()``."""
        ...

    def cancel(self) -> None:
        """Ask the run to stop; it ends promptly with a cancelled (or stopped) status."""
        ...

    def subscribe(self) -> AsyncIterator[EventT_co]:
        """The run's events: past ones first, then live ones until it ends."""
        ...

    def add_listener(self, listener: Callable[[EventT_co], object]) -> None:
        """Call ``listener(event)`` synchronously for each future event."""
        ...
