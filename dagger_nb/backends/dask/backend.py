"""The Dask backend itself: what the executor and the task manager call (see the package's docstring)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import threading
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import anyio

from dagger_nb._callables import Callee, OutputPrints, RemoteContext
from dagger_nb._loop import loop_is_running, submit_to
from dagger_nb.backends.dask._support import _IMPORT_ERROR, _forget_locals, distributed, is_dask_collection
from dagger_nb.backends.dask.batching import Pick, SendBatch, Sent, _miss, _Pick
from dagger_nb.backends.dask.gathering import _deliver_push, _Gatherer
from dagger_nb.backends.dask.remote import ClusterValue
from dagger_nb.backends.dask.worker import (
    _USAGE_ATTRIBUTE,
    _WORKER_ATTRIBUTE,
    _CancelAsyncActions,
    _Done,
    _run_async,
    _run_sync,
)
from dagger_nb.errors import BackendUnavailable, DaggerWarning, ExecutionError, NotSentAhead

if TYPE_CHECKING:
    from dagger_nb.backends import WhereRan

#: Name of the worker plugin that lets a cancelled future cancel its async action.
PLUGIN_NAME = "dagger-nb-cancel"
#: How long closing waits for the cluster to cancel a waiting call's task (closing is rare; a busy
#: scheduler may take a while, and an abandoned task would hold its worker's slot)
_CANCEL_ON_CLOSE_SECONDS = 10


class DaskBackend:
    """Runs each attempt of a node on a Dask cluster through ``client``.

    ``client`` is a ``distributed.Client``, synchronous (the usual
    ``Client(...)`` in a notebook) or asynchronous (``await Client(..., asynchronous=True)``
    on the same loop). ``inline=True`` actions stay on the notebook's loop unless
    ``run_inline_locally=False``.
    """

    #: :meth:`invoke` takes ``prints``: a call's big outputs are fingerprinted on its worker
    fingerprints_outputs = True
    #: inputs may be handed over unfetched (:class:`ClusterValue`): a call on the cluster takes the
    #: future, one in the notebook fetches the value
    takes_deferred = True

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

    async def invoke(
        self,
        callee: Callee,
        kwargs: Mapping[str, Any] | None = None,
        *,
        args: tuple[Any, ...] = (),
        context: RemoteContext | None = None,
        outcome: WhereRan | None = None,
        prints: OutputPrints | None = None,
    ) -> Any:
        """Submit ``callee.fn(*args, **kwargs)`` to the cluster and return its result here.

        The keyword argument ``context`` describes (see :class:`~dagger_nb._callables.RemoteContext`)
        is replaced on the worker by a copy; what the copy wrote and the usage it
        recorded are handed back through ``context.replay``. With ``prints``, the worker
        fingerprints the result's big outputs and they come back in ``prints.found``.
        """
        kwargs = dict(kwargs or {})
        if self._gatherer.closed:
            raise ExecutionError(f"{self!r} was closed: it runs no more calls")
        if callee.inline and self.run_inline_locally:
            return await _invoke_here(callee, args, kwargs)
        computed: dict[int, Any] = {}  # a collection both in the inputs and in the context is computed once
        remote_ctx = None
        if context is not None:
            kwargs.pop(context.argument, None)
            remote_ctx = self._remote_context(context, computed)
        await self._register_plugin()
        sent = self._send(callee.name, callee.fn, args, kwargs, remote_ctx, is_async=callee.is_async, computed=computed,
                          prints=prints)
        try:
            done = await self._receive(sent, outcome)
        except Exception as exception:  # a failed attempt's usage was spent all the same
            if context is not None:
                context.replay((), getattr(exception, _USAGE_ATTRIBUTE, ()))
            raise
        if context is not None:
            context.replay(done.writes, done.usage)
        if prints is not None:
            prints.found = done.prints
        return done.result

    async def call(self, name: str, fn: Any, /, *args: Any, is_async: bool = False, outcome: Any = None) -> Any:
        """Deprecated: ``invoke(Callee(name, fn, is_async, False, False), args=args)``."""
        warnings.warn(
            "DaskBackend.call(name, fn, *args) is deprecated; use DaskBackend.invoke(Callee.of(name, fn), args=args)",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.invoke(Callee(name, fn, is_async, False, False), args=args, outcome=outcome)

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
        prints: OutputPrints | None = None,
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
            sent = Sent(None, key, (runner, self._gatherer.push_to, fn, args, kwargs, remote_ctx, picks, prints),
                        upstream)
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
        except ExecutionError:
            if self._gatherer.closed:  # closed while waiting: nobody will take the result, so no task makes it
                with anyio.move_on_after(_CANCEL_ON_CLOSE_SECONDS, shield=True):
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

    def can_send(self, action: Callee) -> bool:
        """Actions taking ``ctx`` need :meth:`invoke`; so do inline ones kept on the notebook's loop."""
        return not action.takes_ctx and not (action.inline and self.run_inline_locally)

    def send(
        self,
        action: Callee,
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

    async def receive(self, sent: Sent, *, outcome: WhereRan | None = None) -> Any:
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
        """A Dask collection becomes a future of its computed value, computed on the cluster once; a
        result kept on this cluster, its task's future (the worker takes the value from it)."""
        if type(value) is ClusterValue:
            future = value.future_on(self.client)
            return future if future is not None else value.fetch()
        if not is_dask_collection(value):
            return value
        if id(value) not in computed:
            computed[id(value)] = (value, self.client.compute(value))  # keeps value alive: ids stay unique
        return computed[id(value)][1]

    def _remote_context(self, context: RemoteContext, computed: dict[int, Any]) -> dict[str, Any]:
        """What of the context travels: its builder and plain fields, and the values it starts with;
        Dask collections among them (a mapping's values included) computed on the cluster."""

        def on_cluster(value: Any) -> Any:
            if type(value) is dict:
                return {key: self._on_cluster(item, computed) for key, item in value.items()}
            return self._on_cluster(value, computed)

        return {
            "argument": context.argument,
            "build": context.build,
            "fields": {name: on_cluster(value) for name, value in context.fields.items()},
            "seeded": [(namespace, key, self._on_cluster(value, computed)) for namespace, key, value in context.seeded],
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
        return await asyncio.wrap_future(submit_to(self.client.loop.asyncio_loop, coroutine))

    # -- closing ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop bringing results back: the result pump is cancelled and awaited, calls still waiting
        for a result fail (their tasks are cancelled on the cluster), and the backend runs no more
        calls. The client stays open (it is yours)."""
        if self.client.asynchronous or not self.client.loop.asyncio_loop.is_running():
            await self._gatherer.aclose()  # on this loop: the client's own
            return
        await self._on_client_loop(self._gatherer.aclose)

    def close(self) -> None:
        """:meth:`aclose` from synchronous code; waits for the pump when the client's loop runs in its
        own thread (a synchronous client), else cancels it without waiting."""
        loop = self.client.loop.asyncio_loop
        here = asyncio.get_running_loop() if loop_is_running() else None
        if self.client.asynchronous or here is loop or not loop.is_running():
            self._gatherer.close()
            return
        submit_to(loop, self._gatherer.aclose()).result()

    async def __aenter__(self) -> DaskBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"DaskBackend({self.client!r})"


async def _invoke_here(callee: Callee, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An inline call, on the notebook's loop; a Dask future it returns is kept, not awaited. A
    result kept on the cluster among the inputs is fetched first, in a thread (the gather blocks)."""
    args = tuple([await _here(value) for value in args])
    kwargs = {name: await _here(value) for name, value in kwargs.items()}
    result = callee.fn(*args, **kwargs)
    if inspect.isawaitable(result) and not isinstance(result, distributed.Future):
        result = await result
    return result


async def _here(value: Any) -> Any:
    if type(value) is not ClusterValue:
        return value
    if value.fetched:
        return value.fetch()
    return await anyio.to_thread.run_sync(value.fetch)


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


