"""Bringing attempts' results back to the notebook: pushed when small, else gathered in batches."""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from typing import Any
from uuid import uuid4

from dagger_nb._loop import BackgroundGroup
from dagger_nb.backends.dask._support import _forget_locals, dask_pickle, distributed
from dagger_nb.backends.dask.remote import ClusterValue
from dagger_nb.errors import ExecutionError


class _Gatherer:
    """Brings attempts' results back to the notebook, on the client's loop.

    A small result comes pushed: the worker logs it, pickled, as an event on
    the client's topic as the task ends, and the scheduler forwards it on the
    stream it already keeps to the client, just ahead of the news that the task
    finished. That saves the request the client would make to a worker whose
    thread may be holding the GIL: that request and its answer cost the
    notebook's process and the worker more CPU than the event (bench/dask_scaling.py
    measures it). A pushed result is used once Dask
    reports its future finished, so the future is let go of as before and a
    task that Dask fails after all (its worker died just after the push) fails
    as before. At most ``_PUSHED_LIMIT`` are kept, the oldest dropped first: its
    waiter gathers it. One topic per client, whose events name their gatherer,
    so that the scheduler keeps at most one topic's last events per client.

    Any other result is gathered: every future that finished since the last
    batch comes back in one ``gather``, rather than one request per node. A future that failed or was cancelled
    is awaited alone, so its error reads exactly as Dask raises it. The pump that
    gathers runs only while someone waits, owned by a :class:`BackgroundGroup` on the
    client's loop: :meth:`aclose` cancels it and waits for it, and fails every waiter.

    A pushed result the worker kept on the cluster (see ``worker.py``) becomes a
    :class:`ClusterValue` holding the task's future: fetched when somebody reads it.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.topic = f"dagger-nb-results-{client.id}"
        #: what a worker needs to push to this gatherer: the topic, and this gatherer's name on it
        self.push_to = (self.topic, uuid4().hex)
        _GATHERERS[self.push_to[1]] = self
        self._finished: Any = None  # a distributed.as_completed, made on the client's loop
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._pumps = BackgroundGroup("Dask result pump")
        self._pumping = False
        self.closed = False
        self._pushed: OrderedDict[str, bytes] = OrderedDict()  # pickled _Done by task key

    def pushed(self, key: str, payload: bytes) -> None:
        """A worker pushed the pickled ``_Done`` of task ``key``. Call on the client's loop."""
        self._pushed[key] = payload
        if len(self._pushed) > _PUSHED_LIMIT:
            self._pushed.popitem(last=False)

    async def result(self, future: Any) -> Any:
        """What ``await future`` returns (or raises). Call on the client's loop."""
        if self.closed:
            raise ExecutionError(_CLOSED)
        if future.status == "finished" and future.key in self._pushed:  # sent ahead, done meanwhile
            value = self._unpickled(future, self._pushed.pop(future.key))
            if value is not _AWAIT_ALONE:
                return value
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[future.key] = waiter
        if self._finished is None:
            self._finished = distributed.as_completed(loop=self._client.loop)
        self._finished.add(future)
        if not self._pumping:
            self._pumping = True
            self._pumps.submit(self._gather_finished, on_drop=self._dropped,
                               instead="an asynchronous Dask client's loop")
        try:
            value = await waiter
        finally:
            self._waiters.pop(future.key, None)
            self._pushed.pop(future.key, None)  # pushed after a cancel, or too late for the pump
        if value is not _AWAIT_ALONE:
            return value
        exception = await future.exception(asynchronous=True)
        if exception is None:  # cancelled (Dask raises its own error), or finished after all
            try:
                return await future
            except Exception as error:  # cancelled: the error must not hold the future (see below)
                del future
                _forget_locals(error)
                raise
        traceback = await future.traceback(asynchronous=True)
        # Dask keeps the exception: a traceback through frames holding the future would keep the
        # future, hence its key on the cluster, alive for as long as the client lives.
        del future
        raise exception.with_traceback(traceback)

    async def aclose(self) -> None:
        """Stop the pump and wait for it; every waiter fails, and so does any later :meth:`result`.
        Call on the client's loop."""
        self.closed = True
        _GATHERERS.pop(self.push_to[1], None)
        await self._pumps.aclose()
        self._pumping = False
        self._fail_waiters()

    def close(self) -> None:
        """Like :meth:`aclose`, without waiting for the pump to end; from any thread."""
        self.closed = True
        _GATHERERS.pop(self.push_to[1], None)
        self._pumps.close()

    def _dropped(self) -> None:
        """Closed before the pump started: nobody is left to answer the waiters."""
        self._pumping = False
        self._fail_waiters()

    def _fail_waiters(self) -> None:
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ExecutionError(_CLOSED))

    async def _gather_finished(self) -> None:
        # Ends when every added future has been seen: result() submits a new pump after that.
        try:
            await self._pump()
        finally:
            self._pumping = False
            if self.closed:  # closed from another thread: nobody is left to answer the waiters
                self._fail_waiters()

    async def _pump(self) -> None:
        async for first in self._finished:
            batch = [first, *self._finished.next_batch(block=False)]
            finished = []
            for future in batch:
                if future.key not in self._waiters:
                    continue  # its wait was cancelled
                if future.status != "finished":
                    self._resolve(future, _AWAIT_ALONE)
                elif future.key in self._pushed:
                    self._resolve(future, self._unpickled(future, self._pushed.pop(future.key)))
                else:
                    finished.append(future)
            if not finished:
                continue
            try:
                values = await self._client.gather(finished, asynchronous=True)
            except Exception:  # one was lost meanwhile: let each waiter see its own outcome
                values = [_AWAIT_ALONE] * len(finished)
            for future, value in zip(finished, values, strict=True):
                self._resolve(future, value)

    def _unpickled(self, future: Any, payload: bytes) -> Any:
        """The ``_Done`` a worker pushed; one whose result stayed on the cluster gets it as a
        :class:`ClusterValue` of ``future`` (whose task holds it)."""
        done = _unpickled(payload)
        if getattr(done, "kept", False):
            done.result = ClusterValue(self._client, future)
        return done

    def _resolve(self, future: Any, value: Any) -> None:
        waiter = self._waiters.get(future.key)
        if waiter is not None and not waiter.done():
            waiter.set_result(value)


#: How many pushed results a gatherer keeps for their waiters (at most PUSH_LIMIT bytes each).
_PUSHED_LIMIT = 1024


#: Every live gatherer by its name on its client's topic (weak: a client outlives its backends).
_GATHERERS: weakref.WeakValueDictionary[str, _Gatherer] = weakref.WeakValueDictionary()


def _deliver_push(event: tuple[float, Any]) -> None:
    """The client's handler for its topic of pushed results: to the gatherer the event names."""
    name, key, payload = event[1]
    gatherer = _GATHERERS.get(name)
    if gatherer is not None:
        gatherer.pushed(key, payload)


def _unpickled(payload: bytes) -> Any:
    """The ``_Done`` a worker pushed; if it does not unpickle here, the future is awaited instead,
    so that the error reads as Dask raises it."""
    try:
        return dask_pickle.loads(payload)
    except Exception:
        return _AWAIT_ALONE


_AWAIT_ALONE: Any = object()
_CLOSED = "the Dask backend was closed: its results can no longer be received"

