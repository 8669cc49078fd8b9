"""Delivery's lifetime on a bus: ``run``, ``run_sync``, ``start``, ``stop`` and ``async with`` (mixed into PubSub).

One delivery at a time: it owns a task group with one task per registered
node (see :mod:`~dagger_nb.pubsub.dispatch`), enters the bus's
:class:`~dagger_nb._loop.LoopHop` while it runs (so a sync handler's
``ctx.publish_sync`` reaches the loop), counts what it does in a
:class:`~dagger_nb.pubsub.report.Tally` and ends with a
:class:`~dagger_nb.pubsub.report.PubSubReport`. :meth:`BusDelivery.start`
hands it to the bus's :class:`~dagger_nb._loop.BackgroundGroup`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Self, cast

import anyio
import anyio.abc

from dagger_nb._loop import BackgroundGroup, LoopHop, require_loop, run_sync
from dagger_nb.errors import ExecutionError
from dagger_nb.events import EventStream
from dagger_nb.pubsub._state import Node
from dagger_nb.pubsub.events import DeliveryStarted, DeliveryStopped, PubSubEvent
from dagger_nb.pubsub.handle import PubSubHandle
from dagger_nb.pubsub.report import PubSubReport, Tally

if TYPE_CHECKING:
    from dagger_nb.pubsub._durable import Durability
    from dagger_nb.pubsub.bus import PubSub
    from dagger_nb.pubsub.dispatch import Dispatcher


class BusDelivery:
    """How :class:`~dagger_nb.pubsub.bus.PubSub` delivers; the state it uses is the bus's own."""

    events: EventStream[PubSubEvent]
    _dispatch: Dispatcher
    _nodes: dict[str, Node]
    _durable: Durability | None
    _hop: LoopHop
    _background: BackgroundGroup
    _tally: Tally
    _task_group: anyio.abc.TaskGroup | None
    _context_group: anyio.abc.TaskGroup | None
    _running: bool
    _stop_reason: str
    _run_ended: anyio.Event | None
    _handle: PubSubHandle | None
    _stop_early: bool

    _closed: bool
    close: Callable[[], None]

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutionError("this PubSub is closed")

    async def run(self, *, until_idle: bool = False, timeout: float | None = None) -> PubSubReport:
        """Deliver messages until :meth:`stop`, cancellation, ``timeout`` seconds, or idleness; return the report.

        With ``until_idle=True`` it returns once every queue is drained and no
        handler is running. When ``timeout`` passes first, delivery stops and
        ``run`` returns normally (check :meth:`is_idle`). Idle listeners never
        quit: without ``until_idle`` a message published an hour later is
        still delivered. Delivery that breaks (a failed write to the ``db=``
        log) returns a report with status ``failed`` and the exception as its
        ``error``, as ``await handle`` does; cancellation propagates.
        """
        return await self._run(Tally(), until_idle=until_idle, timeout=timeout)

    def run_sync(self, *, until_idle: bool = False, timeout: float | None = None) -> PubSubReport:
        """:meth:`run` from synchronous code: a script, or a thread other than a running loop's."""
        return run_sync(self._run_keywords, until_idle, timeout)

    async def _run_keywords(self, until_idle: bool, timeout: float | None) -> PubSubReport:
        return await self._run(Tally(), until_idle=until_idle, timeout=timeout)

    async def _run(
        self,
        tally: Tally,
        *,
        until_idle: bool,
        timeout: float | None,
        on_start: Callable[[int], object] | None = None,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> PubSubReport:
        self._check_open()
        while self._running and self._dispatch.stopping:  # a stopped run still winding down
            if self._run_ended is None:
                self._run_ended = anyio.Event()
            await self._run_ended.wait()
        if self._running:
            raise ExecutionError("this PubSub is already delivering (one run() or start() at a time)")
        if self._stop_early:
            self._stop_early = False
            task_status.started()
            return tally.report("stopped")
        self._running = True
        self._dispatch.stopping = False
        self._stop_reason = "cancelled"
        self._tally = tally
        tally.start()
        if on_start is not None:  # a handle's events begin with the DeliveryStarted emitted next
            on_start(self.events.emitted)
        self.events.emit(DeliveryStarted())
        try:
            with self._hop.entered():
                await self._deliver(until_idle, timeout, task_status)
        except Exception as error:  # delivery broke (a storage failure): the report carries it
            return tally.report("failed", error)
        return tally.report(self._stop_reason)

    async def _deliver(self, until_idle: bool, timeout: float | None, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with anyio.create_task_group() as group:
                self._task_group = group
                for node in list(self._nodes.values()):
                    group.start_soon(self._dispatch.deliver, node, name=f"pubsub:{node.node_id}")
                task_status.started()
                with anyio.move_on_after(timeout):
                    if until_idle:
                        await self.wait_idle()
                        self._stop_reason = "idle"
                    else:
                        await anyio.sleep_forever()
                if self._stop_reason == "cancelled":
                    self._stop_reason = "timeout"
                self._dispatch.stopping = True
                group.cancel_scope.cancel()
        except BaseExceptionGroup as errors:  # a storage failure in a delivery task: raise it as itself
            self._stop_reason = "failed"
            if len(errors.exceptions) == 1:
                raise errors.exceptions[0] from None
            raise
        finally:
            self._task_group = None
            self._running = False
            self._dispatch.stopping = False
            if self._run_ended is not None:
                self._run_ended.set()
                self._run_ended = None
            if not self.events.closed:
                self.events.emit(DeliveryStopped(self._stop_reason))
            if self._durable is not None:
                self._durable.flush()

    def start(self, *, timeout: float | None = None) -> PubSubHandle:
        """Deliver in the background on the running event loop (a notebook's) and return at once.

        The returned :class:`PubSubHandle` can be awaited for the
        :class:`PubSubReport`, stopped and subscribed to. Raises
        :class:`~dagger_nb.errors.NoRunningLoop` without a running loop (use
        :meth:`run_sync` in scripts), :class:`~dagger_nb.errors.ExecutionError`
        when delivery is already running.
        """
        require_loop("PubSub.start()", instead="pubsub.run_sync()")
        self._check_open()
        winding_down = self._running and self._dispatch.stopping
        if not winding_down and (self._running or (self._handle is not None and not self._handle.done)):
            raise ExecutionError("this PubSub is already delivering (one run() or start() at a time)")
        handle = PubSubHandle(cast("PubSub", self))  # BusDelivery is only ever PubSub's base
        run = partial(self._run, until_idle=False, timeout=timeout)
        self._background.submit(handle._host, run, on_drop=handle._dropped, instead="pubsub.run_sync()")
        self._handle = handle
        return handle

    def stop(self) -> None:
        """End delivery now: no handler starts afterwards, and running async handlers are cancelled.

        From a worker thread while delivery runs (a sync handler, ``handle.cancel()``
        from another thread) the call is carried to the loop's thread. The run (``await handle``,
        ``run()``) ends once every running handler has returned: a sync
        handler's thread cannot be cancelled, so its call is waited for (up to
        ``stop_timeout`` seconds, then a :class:`~dagger_nb.errors.DaggerWarning`
        names it) and counts as handled. A :meth:`start` right after waits for
        that end, so one message's handler never runs twice at once. Messages
        not yet handled stay queued for the next :meth:`run`. Does nothing when
        not delivering.
        """
        if self._hop.off_loop:
            self._hop.call(self.stop)
            return
        if not self._running:
            if self._handle is not None and not self._handle.done:
                self._stop_early = True
            return
        self._dispatch.stopping = True
        self._stop_reason = "stopped"
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def wait_idle(self) -> None:
        """Wait until every queue is drained and no handler is running (delivery must be on)."""
        await self._dispatch.wait_idle()

    def is_idle(self) -> bool:
        """True when no message is queued for any agent and no handler is running."""
        return self._dispatch.outstanding == 0

    @property
    def running(self) -> bool:
        """True while :meth:`run` or :meth:`start` is delivering."""
        return self._running

    @property
    def handle(self) -> PubSubHandle | None:
        """The handle of the latest background delivery (:meth:`start`), or None before one started."""
        return self._handle

    async def __aenter__(self) -> Self:
        self._check_open()
        group = anyio.create_task_group()
        await group.__aenter__()
        self._context_group = group
        try:
            await group.start(self._serve)
        except BaseException as error:
            await group.__aexit__(type(error), error, error.__traceback__)
            raise
        return self

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        report = await self._run(Tally(), until_idle=False, timeout=None, task_status=task_status)
        if report.error is not None:  # no report to return from ``async with``: the failure is raised there
            raise report.error

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool | None:
        """Without an error, deliver until idle; then stop, and close the bus."""
        group, self._context_group = self._context_group, None
        assert group is not None
        try:
            if exc_type is None and self._running and not self._dispatch.stopping:
                await self.wait_idle()
        finally:
            self.stop()
            try:
                await group.__aexit__(None, None, None)
            finally:
                self.close()
        return None
