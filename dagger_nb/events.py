"""An append-only event stream with replay, shared by runs, jobs and pub/sub.

Producers call :meth:`EventStream.emit` (cheap: an append and, only when a
subscriber is waiting, one wake-up). Consumers either iterate
:meth:`EventStream.subscribe` (async; a late subscriber first receives every
event still kept) or register a synchronous listener with :meth:`add_listener`.
With ``limit`` a stream keeps only its last ``limit`` events, so a long-lived
producer (a pub/sub bus) holds a bounded window; a subscriber that falls behind
the window skips ahead and its :attr:`Subscription.skipped` says by how much.

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
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

from dagger_nb.errors import DaggerWarning

E = TypeVar("E")


class EventStream(Generic[E]):
    """Keeps the events of one run, job or bus and fans them out to subscribers.

    Without ``limit`` every event is kept; with it, only the last ``limit``
    (:attr:`history` is then a window and :attr:`dropped` counts what left it).
    """

    def __init__(self, *, limit: int | None = None) -> None:
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"an event stream's limit must be a positive integer or None, got {limit!r}")
        self.limit = limit
        #: The events kept, oldest first: all of them, or the last ``limit``.
        self.history: list[E] | deque[E] = [] if limit is None else deque(maxlen=limit)
        #: How many events were ever emitted (kept or not).
        self.emitted = 0
        self.closed = False
        self._wakeup: anyio.Event | None = None
        self._listeners: list[Callable[[E], object]] = []

    def emit(self, event: E) -> None:
        """Append ``event`` and wake waiting subscribers and listeners."""
        if self.closed:
            raise RuntimeError("emit() called on a closed event stream")
        self.history.append(event)
        self.emitted += 1
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
                self.emitted += 1
                self._notify_listeners(event)
        else:
            self.history.extend(events)
            self.emitted += len(events)
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

    @property
    def dropped(self) -> int:
        """How many of the oldest events left the window (always 0 without ``limit``)."""
        return self.emitted - len(self.history)

    def subscribe(self) -> Subscription[E]:
        """Iterate every kept event, past ones first, then new ones until the stream is closed."""
        return Subscription(self)

    async def _wait(self) -> None:
        if self._wakeup is None:
            self._wakeup = anyio.Event()
        await self._wakeup.wait()

    def _wake(self) -> None:
        if self._wakeup is not None:
            wakeup, self._wakeup = self._wakeup, None
            wakeup.set()


class Subscription(Generic[E]):
    """An async iterator over an :class:`EventStream`'s events, from its oldest kept one.

    A subscriber slower than a bounded stream's window skips the events that
    left it before it read them; :attr:`skipped` counts them (including those
    gone before it subscribed).
    """

    def __init__(self, stream: EventStream[E]) -> None:
        self._stream = stream
        self._position = 0  # the index, among every event ever emitted, of the next one to yield
        self._finished = False
        #: Events this subscriber never received because they left the stream's window first.
        self.skipped = 0

    def __aiter__(self) -> Subscription[E]:
        return self

    async def __anext__(self) -> E:
        stream = self._stream
        while not self._finished:
            history = stream.history
            first = stream.emitted - len(history)
            if self._position < first:
                self.skipped += first - self._position
                self._position = first
            if self._position < stream.emitted:
                event = history[self._position - first]
                self._position += 1
                return event
            if stream.closed:
                break
            await stream._wait()
        self._finished = True
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop iterating: later ``__anext__`` calls end the iteration."""
        self._finished = True
