"""The handle :meth:`PubSub.start` returns for delivery running in the background."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb.pubsub.events import DeliveryStopped
from dagger_nb.pubsub.report import PubSubReport, PubSubStatus, Tally

if TYPE_CHECKING:
    from dagger_nb.pubsub.bus import PubSub
    from dagger_nb.pubsub.events import PubSubEvent


class PubSubHandle:
    """Background delivery on the caller's event loop: await it, stop it, watch its events.

    It satisfies :class:`dagger_nb.handles.Handle`. ``status`` is
    :class:`PubSubStatus` ``running``, then ``stopped`` (by :meth:`stop`, its
    timeout), ``cancelled`` (its task was cancelled) or ``failed``.

    A failure surfaces as a DAG run's does: delivery that breaks (a write to
    the ``db=`` log fails) ends with a :class:`PubSubReport` whose status is
    ``failed`` and whose ``error`` is the exception, also in :attr:`error`;
    ``await handle`` returns that report rather than raising. A failing
    handler does not fail delivery: it is counted in the report and its
    message is dead-lettered.
    """

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self._tally = Tally()
        self._report: PubSubReport | None = None
        self._finished: anyio.Event | None = None
        #: Where this delivery's events start in the bus's stream (the index of its
        #: ``DeliveryStarted`` among every event the bus emitted); None until delivery began.
        self._first: int | None = None
        #: How many events the bus had emitted when this delivery ended (its events are all before).
        self._last: int | None = None
        self._began_or_ended: anyio.Event | None = None
        self._listeners: list[Callable[[PubSubEvent], object]] = []

    async def _host(self, run: Callable[..., Awaitable[PubSubReport]]) -> None:
        """Run delivery (under the bus's background owner) and keep its report."""
        try:
            self._end(await run(self._tally, on_start=self._began))
        except anyio.get_cancelled_exc_class():
            self._end(self._tally.report("cancelled"))
            raise
        except Exception as error:  # a refusal before delivery began (the bus was closed meanwhile)
            self._end(self._tally.report("failed", error))

    def _dropped(self) -> None:
        """The background owner closed before delivery could begin."""
        self._end(self._tally.report("cancelled"))

    def _began(self, position: int) -> None:
        """Delivery begins: its ``DeliveryStarted`` is the bus's event number ``position``."""
        self._first = position
        if self._began_or_ended is not None:
            self._began_or_ended.set()

    def _end(self, report: PubSubReport) -> None:
        if self._report is not None:  # dropped by close() already; the task's own end comes later
            return
        self._report = report
        self._last = self.pubsub.events.emitted
        for forward in self._listeners:
            self.pubsub.events.remove_listener(forward)
        self._listeners.clear()
        if self._finished is not None:
            self._finished.set()
        if self._began_or_ended is not None:
            self._began_or_ended.set()

    @property
    def status(self) -> PubSubStatus:
        """``running`` until delivery ends, then how it ended."""
        return PubSubStatus.RUNNING if self._report is None else self._report.status

    @property
    def done(self) -> bool:
        """True once delivery has ended."""
        return self._report is not None

    @property
    def error(self) -> BaseException | None:
        """The exception that broke delivery (status ``failed``), else None."""
        return None if self._report is None else self._report.error

    @property
    def report(self) -> PubSubReport | None:
        """The report once delivery has ended, else None."""
        return self._report

    def stop(self) -> None:
        """Stop delivery (see :meth:`PubSub.stop`)."""
        self.pubsub.stop()

    def cancel(self) -> None:
        """Same as :meth:`stop` (from any thread): delivery ends ``stopped`` once running handlers returned."""
        self.stop()

    async def wait(self) -> PubSubReport:
        """Wait until delivery ends and return its report (status ``failed`` rather than raising)."""
        if self._report is None:
            if self._finished is None:
                self._finished = anyio.Event()
            await self._finished.wait()
        assert self._report is not None
        return self._report

    def __await__(self) -> Generator[Any, None, PubSubReport]:
        return self.wait().__await__()

    def subscribe(self) -> AsyncIterator[PubSubEvent]:
        """This delivery's events, from its ``DeliveryStarted`` to its ``DeliveryStopped``: past
        ones first, then live ones; the iteration ends with the delivery (at once when it ended
        without beginning). Events of other deliveries on the bus are not part of it; the bus
        keeps a window of its latest events, so a very long delivery's oldest ones may be gone
        (:meth:`PubSub.subscribe_events` is the whole bus's stream)."""
        return self._events()

    async def _events(self) -> AsyncIterator[PubSubEvent]:
        while self._first is None:
            if self._report is not None:  # ended before delivery began: it has no events
                return
            if self._began_or_ended is None:
                self._began_or_ended = anyio.Event()
            await self._began_or_ended.wait()
        first, subscription = self._first, self.pubsub.events.subscribe()
        read = 0
        async for event in subscription:
            position = subscription.skipped + read  # this event's number among all the bus emitted
            read += 1
            if position < first:
                continue
            if self._last is not None and position >= self._last:  # its DeliveryStopped left the window
                return
            yield event
            if isinstance(event, DeliveryStopped):
                return

    def add_listener(self, listener: Callable[[PubSubEvent], object]) -> None:
        """Call ``listener(event)`` synchronously for each future event of this delivery (up to
        its ``DeliveryStopped``); nothing once delivery has ended."""
        if self._report is not None:
            return
        events = self.pubsub.events

        def forward(event: PubSubEvent) -> None:
            # Before this delivery began, the bus's events belong to no delivery (or to the one before).
            if self._first is not None and events.emitted - 1 >= self._first:
                listener(event)
                if isinstance(event, DeliveryStopped):
                    events.remove_listener(forward)

        self._listeners.append(forward)
        events.add_listener(forward)

    def __repr__(self) -> str:
        return f"<PubSubHandle {self.status}>"
