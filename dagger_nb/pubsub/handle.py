"""The handle :meth:`PubSub.start` returns for delivery running in the background."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

import anyio

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

    async def _host(self, run: Callable[[Tally], Awaitable[PubSubReport]]) -> None:
        """Run delivery (under the bus's background owner) and keep its report."""
        try:
            self._end(await run(self._tally))
        except anyio.get_cancelled_exc_class():
            self._end(self._tally.report("cancelled"))
            raise
        except Exception as error:  # a refusal before delivery began (the bus was closed meanwhile)
            self._end(self._tally.report("failed", error))

    def _dropped(self) -> None:
        """The background owner closed before delivery could begin."""
        self._end(self._tally.report("cancelled"))

    def _end(self, report: PubSubReport) -> None:
        if self._report is not None:  # dropped by close() already; the task's own end comes later
            return
        self._report = report
        if self._finished is not None:
            self._finished.set()

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
        """The bus's events, past ones first (see :meth:`PubSub.subscribe_events`)."""
        return self.pubsub.subscribe_events()

    def add_listener(self, listener: Callable[[PubSubEvent], object]) -> None:
        """Call ``listener(event)`` synchronously for each future event of the bus."""
        self.pubsub.events.add_listener(listener)

    def __repr__(self) -> str:
        return f"<PubSubHandle {self.status}>"
