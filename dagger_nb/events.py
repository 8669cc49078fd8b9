"""An append-only event stream with replay, shared by runs, jobs and pub/sub.

Producers call :meth:`EventStream.emit` (cheap: an append and, only when a
subscriber is waiting, one wake-up). Consumers either iterate
:meth:`EventStream.subscribe` (async; a late subscriber first receives every
event so far) or register a synchronous listener with :meth:`add_listener`.

>>> stream = EventStream()
>>> stream.emit("started"); stream.emit("finished"); stream.close()
>>> import anyio
>>> async def collect():
...     return [event async for event in stream.subscribe()]
>>> anyio.run(collect)
['started', 'finished']
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

import anyio

from dagger_nb.errors import DaggerWarning

E = TypeVar("E")


class EventStream(Generic[E]):
    """Keeps every event of one run (or job) and fans it out to subscribers."""

    def __init__(self) -> None:
        self.history: list[E] = []
        self.closed = False
        self._wakeup: anyio.Event | None = None
        self._listeners: list[Callable[[E], object]] = []

    def emit(self, event: E) -> None:
        """Append ``event`` and wake waiting subscribers and listeners."""
        if self.closed:
            raise RuntimeError("emit() called on a closed event stream")
        self.history.append(event)
        if self._listeners:
            self._notify_listeners(event)
        self._wake()

    def _notify_listeners(self, event: E) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as error:  # a dashboard's bug must not break the run that emits
                self._listeners.remove(listener)
                warnings.warn(f"event listener {listener!r} raised {error!r}; it was removed",
                              DaggerWarning, stacklevel=3)

    def emit_many(self, events: list[E]) -> None:
        """:meth:`emit` each of ``events`` in order, waking subscribers once at the end."""
        if self.closed:
            raise RuntimeError("emit_many() called on a closed event stream")
        if self._listeners:
            for event in events:
                if self.closed:  # a listener closed it
                    raise RuntimeError("emit_many() called on a closed event stream")
                self.history.append(event)
                self._notify_listeners(event)
        else:
            self.history.extend(events)
        self._wake()

    def close(self) -> None:
        """No more events will come; subscribers finish after the last one."""
        self.closed = True
        self._wake()

    def add_listener(self, listener: Callable[[E], object]) -> None:
        """Call ``listener(event)`` for every future event, synchronously, in emit order."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[E], object]) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def subscribe(self) -> AsyncIterator[E]:
        """Yield every event, past ones first, until the stream is closed."""
        position = 0
        while True:
            while position < len(self.history):
                yield self.history[position]
                position += 1
            if self.closed:
                return
            if self._wakeup is None:
                self._wakeup = anyio.Event()
            await self._wakeup.wait()

    def _wake(self) -> None:
        if self._wakeup is not None:
            wakeup, self._wakeup = self._wakeup, None
            wakeup.set()
