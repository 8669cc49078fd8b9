"""Run actions on a Dask cluster while orchestration stays in the notebook.

>>> from distributed import Client                          # doctest: +SKIP
>>> client = Client()                                       # doctest: +SKIP
>>> executor = DagExecutor(registry, backend=DaskBackend(client))  # doctest: +SKIP

Each attempt of a node becomes one Dask task whose key is
``f"{action}-{uuid}"``: one Dask key prefix per action, as Dask expects. The
nodes the executor sends ahead together (a fan-out's children) reach the
scheduler as one graph, one update instead of one per ``client.submit``. The
rules, in short (docs/dask.md has the long form):

* async actions run on the worker's event loop, sync ones in its thread pool;
  ``inline=True`` actions are glue and stay on the notebook's loop;
* ``ctx`` arrives on the worker as a copy: ``ctx.executor`` is ``None``,
  ``ctx.cache`` holds only the node's own referenced inputs, and whatever the
  action writes to it (``ctx.output``, ``insert_value``) is written to the run's
  cache when the attempt returns;
* Dask futures in the inputs are resolved on the worker, and Dask collections
  are computed on the cluster first (``client.compute``), so large data moves
  between workers, never through the notebook;
* cancelling the await (node timeout, run cancel, stop policy) cancels the
  future; an async action is cancelled on the worker too, a sync one runs to
  its end in its thread (Python cannot kill threads) and its result is dropped;
* a small result (pickled, at most ``PUSH_LIMIT`` bytes) comes back to the
  notebook through the scheduler as the task finishes, on the streams Dask
  already keeps open; a bigger one is fetched from its worker, as Dask does;
* a worker that dies mid-action makes the attempt fail (``KilledWorker``) once
  the scheduler gives up on the task: set ``distributed.scheduler.allowed-failures``
  to 0 so that happens at the first death and ``try_count`` alone decides.

Workers need ``dagger-nb`` installed: the small wrappers below are pickled by
reference; the action functions themselves travel by value (cloudpickle), so
functions defined in a notebook cell work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import itertools
import threading
import traceback
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import anyio

from dagger_nb.cache import Cache
from dagger_nb.dag.actions import NodeContext, node_outputs
from dagger_nb.errors import ActionError, BackendUnavailable, DaggerError, DaggerWarning, NotSentAhead

_IMPORT_ERROR: ImportError | None = None
try:
    import distributed
    from dask import is_dask_collection
    from dask.sizeof import sizeof
    from distributed.protocol import pickle as dask_pickle
except ImportError as error:  # the optional extra is not installed
    _IMPORT_ERROR = error
try:
    # What Client.submit builds its one-task graph of; private, so a Dask without them
    # gets one client.submit per call (see SendBatch.submit).
    from dask._expr import LLGExpr
    from dask._task_spec import Task, TaskRef, parse_input
except ImportError:
    LLGExpr = None  # type: ignore[misc,assignment]
_PluginBase: Any = distributed.WorkerPlugin if _IMPORT_ERROR is None else object

if TYPE_CHECKING:
    from dagger_nb.dag.actions import Action
    from dagger_nb.dag.report import NodeOutcome

#: Name of the worker plugin that lets a cancelled future cancel its async action.
PLUGIN_NAME = "dagger-nb-cancel"
#: The largest result, pickled, that a worker pushes to the notebook with the task's end; a bigger
#: one is fetched from the worker. The scheduler keeps the last 1000 events of each client's topic
#: (Dask's ``distributed.admin.low-level-log-length``), so this bounds what it holds for us.
PUSH_LIMIT = 4096
_WORKER_ATTRIBUTE = "_dagger_nb_worker"
#: the usage a failed attempt recorded (``ctx.record_usage``), travelling with its exception
_USAGE_ATTRIBUTE = "_dagger_nb_usage"


class DaskBackend:
    """Runs each attempt of a node on a Dask cluster through ``client``.

    ``client`` is a ``distributed.Client``, synchronous (the usual
    ``Client(...)`` in a notebook) or asynchronous (``await Client(..., asynchronous=True)``
    on the same loop). ``inline=True`` actions stay on the notebook's loop unless
    ``run_inline_locally=False``.
    """

    def __init__(self, client: Any, *, run_inline_locally: bool = True) -> None:
        if _IMPORT_ERROR is not None:
            raise BackendUnavailable(
                f"DaskBackend needs dask and distributed ({_IMPORT_ERROR}): pip install dagger-nb[dask]"
            )
        self.client = client
        self.run_inline_locally = run_inline_locally
        self._plugin_ready: concurrent.futures.Future[None] | None = None
        self._plugin_lock = threading.Lock()
        self._gatherer = _Gatherer(client)
        # Keys: a random part per backend and a counter, as unique as a uuid4 per call and cheaper.
        self._key_token = uuid4().hex
        self._key_numbers = itertools.count()

    async def invoke(self, action: Action, kwargs: dict[str, Any], *, outcome: NodeOutcome | None = None) -> Any:
        """Submit ``action.fn(**kwargs)`` to the cluster and return its result here."""
        if action.inline and self.run_inline_locally:
            return await _invoke_here(action, kwargs)
        kwargs = dict(kwargs)
        ctx: NodeContext | None = kwargs.pop("ctx", None)
        computed: dict[int, Any] = {}  # a collection both in the inputs and in ctx is computed once
        remote_ctx = self._remote_context(ctx, computed) if ctx is not None else None
        await self._register_plugin()
        sent = self._send(action.name, action.fn, (), kwargs, remote_ctx, is_async=action.is_async, computed=computed)
        try:
            done = await self._receive(sent, outcome)
        except Exception as exception:  # a failed attempt's usage was spent all the same
            if ctx is not None:
                ctx.replay_usage(getattr(exception, _USAGE_ATTRIBUTE, ()))
            raise
        if ctx is not None:
            for namespace, name, value in done.writes:
                ctx.cache.insert(namespace, name, value)
            ctx.replay_usage(done.usage)
        return done.result

    async def call(self, name: str, fn: Any, /, *args: Any, is_async: bool = False, outcome: Any = None) -> Any:
        """Run ``fn(*args)`` on the cluster under key prefix ``name`` and return its result here.

        The building block for callers other than the executor (a task manager's
        agents): same cancellation, key naming and data handling as :meth:`invoke`;
        ``outcome``, any object with a ``worker`` attribute, learns where it ran.
        """
        await self._register_plugin()
        done = await self._receive(self._send(name, fn, args, {}, None, is_async=is_async, computed={}), outcome)
        return done.result

    def _send(
        self,
        name: str,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        remote_ctx: dict[str, Any] | None,
        *,
        is_async: bool,
        computed: dict[int, Any],
        picks: tuple[_Pick, ...] = (),
        after: tuple[Sent, ...] = (),
        batch: SendBatch | None = None,
    ) -> Sent:
        """Submit the call now, or when ``batch`` ends if one is given.

        What fails is raised here without a batch; with one, the call misses (see
        :meth:`SendBatch.submit`), so that only its own node sees the error.
        """
        key = self._new_key(name)
        upstream: tuple[Any, ...] = ()
        try:
            args = tuple(self._on_cluster(value, computed) for value in args)
            kwargs = {argument: self._on_cluster(value, computed) for argument, value in kwargs.items()}
            runner = _run_async if is_async else _run_sync
            # An upstream call already submitted is waited for through its future, taken now (the
            # notebook lets go of it once received); one in the same batch, through its key.
            upstream = tuple(call.future if call.future is not None else call for call in after)
            sent = Sent(None, key, (runner, self._gatherer.push_to, fn, args, kwargs, remote_ctx, picks), upstream)
            if batch is None:
                self._submit_alone(sent)
        except Exception as error:  # say, an input that does not pickle, or a collection that does not compute
            # The error's traceback holds the frames: what they hold of the call's futures must go.
            _forget_locals(error)  # the finished ones
            computed.clear()  # this one's: the computed collections', the inputs holding them, the upstream's
            args, kwargs, upstream = (), {}, ()
            if batch is None:
                raise
            sent = Sent(None, key)
            _miss(sent, f"it could not be submitted: {error}")
        if batch is not None and sent.missed is None:
            batch.calls.append(sent)
        return sent

    def _new_key(self, name: str) -> str:
        """A task key whose Dask prefix (``dask.utils.key_split``) is ``name``."""
        return f"{name}-{self._key_token}{next(self._key_numbers):x}"

    def _submit_alone(self, sent: Sent) -> None:
        assert sent.call is not None
        runner, *arguments = sent.call
        upstream = [call.future if isinstance(call, Sent) else call for call in sent.upstream]
        if any(future is None for future in upstream):
            raise RuntimeError(f"call {sent.key} waits for a call that was not submitted, or was received already")
        sent.call, sent.upstream = None, ()  # submitted or failed, the Sent holds neither any more
        # The upstream futures go last, unnested: Dask handles top-level futures fastest.
        sent.future = self.client.submit(runner, sent.key, *arguments, *upstream, key=sent.key, pure=False)

    async def _receive(self, sent: Sent, outcome: Any) -> _Done:
        if sent.missed is not None:
            missed, sent.missed = sent.missed, None
            raise NotSentAhead(missed)
        future = sent.future
        if future is None:
            raise RuntimeError("this call was received or discarded already")
        rejected: str | None = None
        try:
            done: _Done = await self._on_client_loop(self._gatherer.result, future)
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(1, shield=True):
                await self._on_client_loop(_cancel, self.client, [future])
            raise
        except Exception as exception:
            if outcome is not None:
                outcome.worker = getattr(exception, _WORKER_ATTRIBUTE, outcome.worker)
            future = None  # the exception's traceback holds this frame (see _Gatherer.result)
            if not (sent.in_graph and _rejected_graph(exception)):
                raise
            rejected = str(exception)
        finally:
            # Let go of the future: one the notebook still holds stays in the cluster's memory
            # (and the client announces it again on every get_dataset, even once cancelled).
            sent.future = None
        if rejected is not None:
            # The scheduler failed the whole graph this call went in (for another call's input, most
            # likely): it never ran. Sent anew, alone, it fails only if it is the cause. Raised out
            # here, where the scheduler's error (and what its traceback holds) is gone.
            raise NotSentAhead(f"the scheduler rejected the graph it was sent in: {rejected}")
        if done.missed is not None:
            raise NotSentAhead(done.missed)
        if done.held:
            with anyio.CancelScope(shield=True):  # else the worker's published futures would leak
                done.result = await self._on_client_loop(_take_over, self.client, future.key)
        if outcome is not None:
            outcome.worker = done.worker
        return done

    # -- sending work ahead (the executor's side of it: dag/scheduler.py) ---------------------------

    async def prepare(self) -> None:
        """Get the cluster ready for :meth:`send` (once per backend; the executor calls it per run)."""
        await self._register_plugin()

    def can_send(self, action: Action) -> bool:
        """Actions taking ``ctx`` need :meth:`invoke`; so do inline ones kept on the notebook's loop."""
        return not action.takes_ctx and not (action.inline and self.run_inline_locally)

    def send(
        self,
        action: Action,
        kwargs: dict[str, Any],
        *,
        after: Mapping[str, Sent] | None = None,
        picks: tuple[Pick, ...] = (),
        batch: SendBatch | None = None,
    ) -> Sent:
        """Submit ``action.fn(**kwargs)`` and return at once; :meth:`receive` awaits it.

        ``after`` maps node ids to calls already sent whose results this one
        waits for on the cluster, and ``picks`` names the keyword arguments taken
        from those results: ``(argument, node id, the node's declared outputs,
        output name)``. The call then starts on a worker as soon as they are done,
        without a round trip through the notebook. Actions taking ``ctx`` cannot
        be sent this way. If a pick is missing from its node's result, the call
        fails with :class:`NotSentAhead` and the executor runs the node anew.

        With ``batch`` (from :meth:`batch`) the call is submitted when the batch
        ends, in one graph with the batch's other calls.
        """
        after = after or {}
        position = {node: index for index, node in enumerate(after)}
        indexed = tuple((name, position[node], node, declared, output) for name, node, declared, output in picks)
        return self._send(
            action.name, action.fn, (), kwargs, None, is_async=action.is_async, computed={},
            picks=indexed, after=tuple(after.values()), batch=batch,
        )

    def batch(self) -> SendBatch:
        """A batch for :meth:`send`: its calls go to the scheduler in one graph when the ``with`` block ends.

        >>> with backend.batch() as batch:                               # doctest: +SKIP
        ...     first = backend.send(action, {"x": 1}, batch=batch)
        ...     second = backend.send(action, {}, after={"a": first}, picks=picks, batch=batch)
        """
        return SendBatch(self)

    async def receive(self, sent: Sent, *, outcome: NodeOutcome | None = None) -> Any:
        """The result of a call from :meth:`send` (cancelling the await cancels the call)."""
        done = await self._receive(sent, outcome)
        return done.result

    async def discard(self, calls: Iterable[Sent]) -> None:
        """Cancel calls sent ahead that will never be received."""
        calls = list(calls)
        futures = [sent.future for sent in calls if sent.future is not None]
        for sent in calls:
            sent.future, sent.missed = None, None
        if futures:
            await self._on_client_loop(_cancel, self.client, futures)

    # -- notebook side -----------------------------------------------------------------------------

    def _on_cluster(self, value: Any, computed: dict[int, Any]) -> Any:
        """A Dask collection becomes a future of its computed value, computed on the cluster once."""
        if not is_dask_collection(value):
            return value
        if id(value) not in computed:
            computed[id(value)] = (value, self.client.compute(value))  # keeps value alive: ids stay unique
        return computed[id(value)][1]

    def _remote_context(self, ctx: NodeContext, computed: dict[int, Any]) -> dict[str, Any]:
        """What of ``ctx`` travels: plain data, plus the cache entries the node's inputs reference."""
        seeded = []
        if ctx.executor is not None:
            try:
                inputs = ctx.executor.workflow(ctx.workflow).node(ctx.node).inputs
            except DaggerError:  # the workflow was replaced or removed meanwhile: nothing to seed
                inputs = []
            for spec in inputs:
                if spec.reference is None:
                    continue
                namespace, _, name = spec.reference.partition(".")
                value = ctx.cache.get(namespace, name, _MISSING)
                if value is not _MISSING:
                    seeded.append((namespace, name, self._on_cluster(value, computed)))
        return {
            "node": ctx.node,
            "workflow": ctx.workflow,
            "run_id": ctx.run_id,
            "attempt": ctx.attempt,
            "inputs": {name: self._on_cluster(value, computed) for name, value in ctx.inputs.items()},
            "seeded": seeded,
        }

    async def _register_plugin(self) -> None:
        """Once per backend, before the first submit; concurrent first calls wait for it, from
        any thread's loop (a notebook's run and a script's private loop may share the backend)."""
        ready = self._plugin_ready
        if ready is not None and ready.done():
            return
        with self._plugin_lock:
            first = self._plugin_ready is None
            if first:
                self._plugin_ready = concurrent.futures.Future()
            ready = self._plugin_ready
        assert ready is not None
        if not first:
            # shielded: cancelling this wait must not cancel the registration the others wait for
            await asyncio.shield(asyncio.wrap_future(ready))
            return
        try:
            allowed_failures = await self._on_client_loop(_register, self.client, _CancelAsyncActions(), self._gatherer)
        finally:
            ready.set_result(None)
        if allowed_failures:
            warnings.warn(
                f"the Dask scheduler reruns a task whose worker died up to {allowed_failures} times "
                "(distributed.scheduler.allowed-failures) before the attempt sees the death, so a node's "
                "try_count (a task's max_retries) does not decide alone; create the scheduler with allowed-failures=0 "
                "(see docs/dask.md, 'A worker that dies')",
                DaggerWarning,
                stacklevel=2,
            )

    async def _on_client_loop(self, fn: Any, *args: Any) -> Any:
        """Await ``fn(*args)`` on the client's loop: ours for an asynchronous client, else its thread's.

        A synchronous client's calls would block our loop; on its own loop they are
        coroutines, and cancelling our await cancels them there.
        """
        coroutine = fn(*args)
        del args  # an error's traceback holds this frame: it must not hold a future (see _Gatherer.result)
        if self.client.asynchronous:
            return await coroutine
        running = asyncio.run_coroutine_threadsafe(coroutine, self.client.loop.asyncio_loop)
        return await asyncio.wrap_future(running)

    def __repr__(self) -> str:
        return f"DaskBackend({self.client!r})"


async def _invoke_here(action: Action, kwargs: dict[str, Any]) -> Any:
    """An inline action, on the notebook's loop; a Dask future it returns is kept, not awaited."""
    result = action.fn(**kwargs)
    if inspect.isawaitable(result) and not isinstance(result, distributed.Future):
        result = await result
    return result


class _Gatherer:
    """Brings attempts' results back to the notebook, on the client's loop.

    A small result comes pushed: the worker logs it, pickled, as an event on
    the client's topic as the task ends, and the scheduler forwards it on the
    stream it already keeps to the client, just ahead of the news that the task
    finished. That saves the request the client would make to a worker whose
    thread may be holding the GIL: on two shared cores, that request and its
    answer cost the notebook's process and the worker more CPU than the event
    (about a fifth of both, per trivial node). A pushed result is used once Dask
    reports its future finished, so the future is let go of as before and a
    task that Dask fails after all (its worker died just after the push) fails
    as before. At most ``_PUSHED_LIMIT`` are kept, the oldest dropped first: its
    waiter gathers it. One topic per client, whose events name their gatherer,
    so that the scheduler keeps at most one topic's last events per client.

    Any other result is gathered: every future that finished since the last
    batch comes back in one ``gather`` (measured on ``fanout_1000``: a fifth less
    wall time than one request per node). A future that failed or was cancelled
    is awaited alone, so its error reads exactly as Dask raises it. The pump that
    gathers runs only while someone waits.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.topic = f"dagger-nb-results-{client.id}"
        #: what a worker needs to push to this gatherer: the topic, and this gatherer's name on it
        self.push_to = (self.topic, uuid4().hex)
        _GATHERERS[self.push_to[1]] = self
        self._finished: Any = None  # a distributed.as_completed, made on the client's loop
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._pump: asyncio.Task[None] | None = None
        self._pushed: OrderedDict[str, bytes] = OrderedDict()  # pickled _Done by task key

    def pushed(self, key: str, payload: bytes) -> None:
        """A worker pushed the pickled ``_Done`` of task ``key``. Call on the client's loop."""
        self._pushed[key] = payload
        if len(self._pushed) > _PUSHED_LIMIT:
            self._pushed.popitem(last=False)

    async def result(self, future: Any) -> Any:
        """What ``await future`` returns (or raises). Call on the client's loop."""
        if future.status == "finished" and future.key in self._pushed:  # sent ahead, done meanwhile
            value = _unpickled(self._pushed.pop(future.key))
            if value is not _AWAIT_ALONE:
                return value
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[future.key] = waiter
        if self._finished is None:
            self._finished = distributed.as_completed(loop=self._client.loop)
        self._finished.add(future)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._gather_finished(), name="dagger-nb gather")
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

    async def _gather_finished(self) -> None:
        # Ends when every added future has been seen: result() starts a new pump after that.
        async for first in self._finished:
            batch = [first, *self._finished.next_batch(block=False)]
            finished = []
            for future in batch:
                if future.key not in self._waiters:
                    continue  # its wait was cancelled
                if future.status != "finished":
                    self._resolve(future, _AWAIT_ALONE)
                elif future.key in self._pushed:
                    self._resolve(future, _unpickled(self._pushed.pop(future.key)))
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


async def _cancel(client: Any, futures: list[Any]) -> None:
    await client.cancel(futures)


async def _take_over(client: Any, name: str) -> Any:
    """The result an action left on the cluster, its futures now ours; the worker's hold on them goes."""
    result = await client.get_dataset(name)
    await client.unpublish_dataset(name)
    return result


async def _register(client: Any, plugin: Any, gatherer: _Gatherer) -> int | None:
    """Subscribe ``gatherer`` to its pushed results and register ``plugin`` on the workers; the
    scheduler's allowed-failures, None if it cannot tell."""
    # Before any submit, on the same stream: the scheduler subscribes us before a task can push.
    client.subscribe_topic(gatherer.topic, _deliver_push)  # the same handler for every backend
    await client.register_plugin(plugin, name=PLUGIN_NAME)
    try:
        # a lambda: pickled by value, so the scheduler needs no dagger-nb to run it
        return int(await client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures))
    except Exception:  # a scheduler that runs no client code, or another distributed
        return None


_MISSING: Any = object()


@dataclass(slots=True, eq=False)
class Sent:
    """A call made by :meth:`DaskBackend.send`: its Dask future once submitted, None again once
    received or discarded."""

    future: Any
    key: str = ""
    #: the wrapper and its arguments but the key, until the call is submitted
    call: tuple[Any, ...] | None = None
    #: the futures of the calls it waits for, or those calls themselves while in the same batch
    upstream: tuple[Any, ...] = ()
    #: submitted in one graph with other calls
    in_graph: bool = False
    #: why it could not be submitted: :meth:`DaskBackend.receive` raises :class:`NotSentAhead` with it
    missed: str | None = None


class SendBatch:
    """Calls :meth:`DaskBackend.send` made in one ``with`` block, submitted together when it ends.

    Each ``client.submit`` is one graph update for the scheduler, which hands
    every update to a thread and back; a fan-out's thousand children sent in one
    step go in one update instead, as the same tasks under the same keys. The
    block is synchronous (no ``await`` inside), so no call of a batch can be
    received, cancelled or discarded before the batch is submitted.
    """

    def __init__(self, backend: DaskBackend) -> None:
        self._backend = backend
        self.calls: list[Sent] = []

    def __enter__(self) -> SendBatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.submit()

    def submit(self) -> None:
        """Submit the calls sent so far (as one graph when there are several), and start anew."""
        calls, sent_so_far, self.calls = [], self.calls, []
        in_batch: set[Sent] = set()
        for sent in sent_so_far:  # in the order sent: a call comes after those it waits for
            # (those already submitted are futures here): one not in the batch missed
            if any(isinstance(call, Sent) and call not in in_batch for call in sent.upstream):
                _miss(sent, "a call it waits for could not be submitted")
            else:
                calls.append(sent)
                in_batch.add(sent)
        if len(calls) > 1 and LLGExpr is not None:
            if self._submit_graph(calls):
                return
            for sent in calls:  # the client registered the graph's keys before it failed: new ones
                sent.key = self._backend._new_key(sent.key.rpartition("-")[0])
        for sent in calls:
            _submit_alone_or_miss(self._backend, sent)

    def _submit_graph(self, calls: list[Sent]) -> bool:
        """Submit ``calls`` as one graph; False if the client cannot (say, an input does not pickle)."""
        try:
            futures = self._backend.client.get(
                _graph(calls), [sent.key for sent in calls], sync=False, fifo_timeout="100 ms"
            )
        except Exception as error:  # each call alone then, so that only the culprit misses
            _forget_locals(error)
            return False
        for sent, future in zip(calls, futures, strict=True):
            sent.future, sent.in_graph = future, True
            sent.call, sent.upstream = None, ()
        return True


def _graph(calls: list[Sent]) -> Any:
    """The tasks Client.submit would make for ``calls``, as one graph; a call waiting for another
    in the graph names its key."""
    tasks = {}
    for sent in calls:
        assert sent.call is not None
        runner, *arguments = sent.call
        upstream = (TaskRef(call.key) if isinstance(call, Sent) else call for call in sent.upstream)
        tasks[sent.key] = Task(sent.key, runner, sent.key, *map(parse_input, arguments), *map(parse_input, upstream))
    # A random token, as Client.submit gives: tokenizing the graph would pickle every action.
    return LLGExpr(tasks, _determ_token=uuid4().hex)


def _submit_alone_or_miss(backend: DaskBackend, sent: Sent) -> None:
    """Submit ``sent`` alone; if that fails, it is a miss: its node is sent anew when its turn comes
    (and fails then, with its actual inputs, if they are the cause). The error is kept as text:
    its traceback would hold the call's inputs, and the batch's."""
    try:
        backend._submit_alone(sent)
    except Exception as error:
        _forget_locals(error)
        _miss(sent, f"it could not be submitted: {error}")


def _miss(sent: Sent, why: str) -> None:
    sent.missed = why
    sent.call, sent.upstream = None, ()


def _forget_locals(error: BaseException) -> None:
    """Clear the locals of the (finished) frames a failed submit left in ``error``: they hold the
    futures of the call and of those it waits for, whose keys would stay on the cluster for as long
    as anything keeps the error (Dask logs it: a handler may keep the record)."""
    seen: BaseException | None = error
    while seen is not None:  # with the errors Dask's pickling fallbacks raised on the way
        traceback.clear_frames(seen.__traceback__)
        seen = seen.__context__


def _rejected_graph(exception: BaseException) -> bool:
    """Whether the scheduler failed the call, unrun, with every call of the graph it came in: it
    could not load the graph, or one of the graph's inputs was gone ("lost dependencies")."""
    if isinstance(exception, distributed.client.FutureCancelledError):
        return exception.reason == "lost dependencies"
    return (
        isinstance(exception, RuntimeError)
        and not hasattr(exception, _WORKER_ATTRIBUTE)
        and "deserialization of the task graph" in str(exception)
    )


#: ``(argument, upstream node id, the node's declared outputs, output name)``
Pick = tuple[str, str, tuple[str, ...], str]
#: a pick as sent: ``(argument, position of the upstream result, node id, declared outputs, output name)``
_Pick = tuple[str, int, str, tuple[str, ...], str]


# -- worker side -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Done:
    """What an attempt sends back: its result, where it ran, and what it wrote through ``ctx``."""

    result: Any
    worker: str | None
    writes: list[tuple[str, str, Any]]
    #: the result holds Dask futures: it is published under the task's key until the notebook takes
    #: it, and ``result`` is None (a future inside data moved between workers would bind there)
    held: bool = False
    #: a call sent ahead did not run: why it could not take its inputs from its upstream results
    missed: str | None = None
    #: what the action reported with ``ctx.record_usage``: (tokens, cost, model) per call
    usage: list[tuple[int, float | None, str | None]] = field(default_factory=list)


class _RecordingCache(Cache):
    """The worker's ``ctx.cache``: seeded with the node's inputs, recording every write."""

    def __init__(self, seeded: list[tuple[str, str, Any]]) -> None:
        super().__init__()
        for namespace, key, value in seeded:
            super().insert(namespace, key, value)
        self.writes: list[tuple[str, str, Any]] = []
        #: the context's ``record_usage`` calls, sent back with the attempt
        self.usage: list[tuple[int, float | None, str | None]] = []

    def insert(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` here and remember to write it to the run's cache."""
        super().insert(namespace, key, value)
        self.writes.append((namespace, key, value))


def _context(remote: dict[str, Any] | None) -> tuple[dict[str, Any], _RecordingCache | None]:
    if remote is None:
        return {}, None
    cache = _RecordingCache(remote["seeded"])
    ctx = NodeContext(remote["node"], remote["workflow"], remote["run_id"], remote["attempt"], remote["inputs"], cache,
                      usage=cache.usage)
    return {"ctx": ctx}, cache


def _worker_address() -> str | None:
    try:
        return str(distributed.get_worker().address)
    except ValueError:  # not on a worker (a test calling the wrapper directly)
        return None


def _run_sync(
    key: str,
    push_to: tuple[str, str],
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    remote: dict[str, Any] | None,
    picks: tuple[_Pick, ...] = (),
    *upstream: _Done,
) -> _Done:
    """Run a sync action in the worker's thread pool."""
    extra, cache = _context(remote)
    address = _worker_address()
    try:
        picked = _picked(picks, upstream)
        if isinstance(picked, str):
            return _Done(None, address, [], missed=picked)
        result = fn(*args, **kwargs, **picked, **extra)
        if inspect.isawaitable(result) and not isinstance(result, distributed.Future):
            result = anyio.run(_awaited, result)
        held = _holds_futures(result)
        if held:
            distributed.get_client().publish_dataset(result, name=key)
    except Exception as exception:
        _tag(exception, address, cache)
        raise
    writes, usage = (cache.writes, cache.usage) if cache is not None else ([], [])
    return _push_if_small(key, push_to, _Done(None if held else result, address, writes, held, usage=usage))


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _run_async(
    key: str,
    push_to: tuple[str, str],
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    remote: dict[str, Any] | None,
    picks: tuple[_Pick, ...] = (),
    *upstream: _Done,
) -> _Done:
    """Run an async action on the worker's event loop, cancellable through the worker plugin."""
    extra, cache = _context(remote)
    address = _worker_address()
    try:
        picked = _picked(picks, upstream)
        if isinstance(picked, str):
            return _Done(None, address, [], missed=picked)
        with anyio.CancelScope() as scope:
            _RUNNING[key] = scope
            result = await fn(*args, **kwargs, **picked, **extra)
        held = not scope.cancelled_caught and _holds_futures(result)
        if held:
            await distributed.get_client().publish_dataset(result, name=key)
    except Exception as exception:
        _tag(exception, address, cache)
        raise
    finally:
        _RUNNING.pop(key, None)
    if scope.cancelled_caught:
        raise RuntimeError(f"task {key} was cancelled on worker {address}")
    writes, usage = (cache.writes, cache.usage) if cache is not None else ([], [])
    return _push_if_small(key, push_to, _Done(None if held else result, address, writes, held, usage=usage))


def _push_if_small(key: str, push_to: tuple[str, str], done: _Done) -> _Done:
    """``done``, also pushed to the notebook (see :class:`_Gatherer`) if it pickles small."""
    if done.worker is None:  # not on a worker: a test calling the wrapper
        return done
    try:
        if sizeof(done.result) + sizeof(done.writes) > PUSH_LIMIT:
            return done  # estimated first, so that a big result is never pickled twice
        payload = dask_pickle.dumps(done)
    except Exception:  # say, a value that contains itself; Dask reports what matters as usual
        return done
    if len(payload) <= PUSH_LIMIT:
        topic, gatherer = push_to
        distributed.get_worker().log_event(topic, [gatherer, key, payload])
    return done


def _holds_futures(value: Any) -> bool:
    """Whether ``value`` holds Dask futures: ``distributed.futures_of`` would walk a value that
    contains itself forever, and its worker with it."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if type(item) in (list, tuple, set, frozenset, dict):
            if id(item) not in seen:
                seen.add(id(item))
                stack.extend(item.values() if type(item) is dict else item)
        elif isinstance(item, distributed.Future) or (is_dask_collection(item) and distributed.futures_of(item)):
            return True
    return False


def _picked(picks: tuple[_Pick, ...], upstream: tuple[_Done, ...]) -> dict[str, Any] | str:
    """The arguments a call sent ahead takes from its upstream calls' results, or why it cannot."""
    values = {}
    for argument, index, node, declared, output in picks:
        if upstream[index].held:  # the notebook hands such results on itself
            return f"node '{node}' left its result on the cluster"
        try:
            outputs = node_outputs(node, declared, upstream[index].result)
        except ActionError as error:
            return str(error)
        if output not in outputs:
            produced = ", ".join(f"'{name}'" for name in list(outputs)[:5]) or "nothing"
            more = f" and {len(outputs) - 5} more" if len(outputs) > 5 else ""
            return f"node '{node}' did not produce '{output}' (it produced {produced}{more})"
        if is_dask_collection(outputs[output]):  # the notebook has it computed on the cluster first
            return f"node '{node}' returned a Dask collection as '{output}'"
        values[argument] = outputs[output]
    return values


def _tag(exception: Exception, address: str | None, cache: _RecordingCache | None = None) -> None:
    """Remember where the attempt failed and what it used; the attributes travel with the pickled exception."""
    with contextlib.suppress(AttributeError):  # exceptions with __slots__
        setattr(exception, _WORKER_ATTRIBUTE, address)
        if cache is not None and cache.usage:
            setattr(exception, _USAGE_ATTRIBUTE, cache.usage)


#: On a worker: the cancel scope of each running async action, by task key. Per process and
#: keyed by unique task keys, so every backend (and every re-registration of the plugin) shares it.
_RUNNING: dict[str, anyio.CancelScope] = {}


class _CancelAsyncActions(_PluginBase):
    """On each worker: when the scheduler cancels a running async action, cancel its scope."""

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """Cancel the action's scope once its task leaves the executing state for good."""
        if finish in ("cancelled", "released", "forgotten") and isinstance(key, str):
            scope = _RUNNING.get(key)
            if scope is not None:
                scope.cancel()
