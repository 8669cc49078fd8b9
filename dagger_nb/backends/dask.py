"""Run actions on a Dask cluster while orchestration stays in the notebook.

>>> from distributed import Client                          # doctest: +SKIP
>>> client = Client()                                       # doctest: +SKIP
>>> executor = DagExecutor(registry, backend=DaskBackend(client))  # doctest: +SKIP

Each attempt of a node becomes one ``client.submit`` whose key is
``f"{action}-{uuid}"``: one Dask key prefix per action, as Dask expects. The
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
* a worker that dies mid-action makes the attempt fail (``KilledWorker``) once
  the scheduler gives up on the task: set ``distributed.scheduler.allowed-failures``
  to 0 so that happens at the first death and ``try_count`` alone decides.

Workers need ``dagger-nb`` installed: the small wrappers below are pickled by
reference; the action functions themselves travel by value (cloudpickle), so
functions defined in a notebook cell work.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import anyio

from dagger_nb.backends import LocalBackend
from dagger_nb.cache import Cache
from dagger_nb.dag.actions import NodeContext
from dagger_nb.errors import BackendUnavailable

try:
    import distributed
    from dask import is_dask_collection
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as error:  # the optional extra is not installed
    _IMPORT_ERROR: ImportError | None = error
    WorkerPlugin = object
else:
    _IMPORT_ERROR = None

if TYPE_CHECKING:
    from dagger_nb.dag.actions import Action
    from dagger_nb.dag.report import NodeOutcome

#: Name of the worker plugin that lets a cancelled future cancel its async action.
PLUGIN_NAME = "dagger-nb-cancel"
_WORKER_ATTRIBUTE = "_dagger_nb_worker"


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
        self._local = LocalBackend()
        self._plugin_ready: anyio.Event | None = None

    async def invoke(self, action: Action, kwargs: dict[str, Any], *, outcome: NodeOutcome | None = None) -> Any:
        """Submit ``action.fn(**kwargs)`` to the cluster and return its result here."""
        if action.inline and self.run_inline_locally:
            return await self._local.invoke(action, kwargs, outcome=outcome)
        kwargs = dict(kwargs)
        ctx: NodeContext | None = kwargs.pop("ctx", None)
        remote_ctx = self._remote_context(ctx) if ctx is not None else None
        kwargs = {name: self._on_cluster(value) for name, value in kwargs.items()}
        await self._register_plugin()
        key = f"{action.name}-{uuid4().hex}"
        runner = _run_async if action.is_async else _run_sync
        future = self.client.submit(runner, key, action.fn, kwargs, remote_ctx, key=key, pure=False)
        try:
            done = await self._result(future)
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(1, shield=True):
                await self._cancel(future)
            raise
        except Exception as exception:
            if outcome is not None:
                outcome.worker = getattr(exception, _WORKER_ATTRIBUTE, outcome.worker)
            raise
        if outcome is not None:
            outcome.worker = done.worker
        if ctx is not None:
            for namespace, name, value in done.writes:
                ctx.cache.insert(namespace, name, value)
        return done.result

    # -- notebook side -----------------------------------------------------------------------------

    def _on_cluster(self, value: Any) -> Any:
        """A Dask collection becomes a future of its computed value, computed on the cluster."""
        if is_dask_collection(value):
            return self.client.compute(value)
        return value

    def _remote_context(self, ctx: NodeContext) -> dict[str, Any]:
        """What of ``ctx`` travels: plain data, plus the cache entries the node's inputs reference."""
        seeded = []
        if ctx.executor is not None:
            try:
                inputs = ctx.executor.workflow(ctx.workflow).node(ctx.node).inputs
            except Exception:  # the workflow was replaced meanwhile: nothing to seed
                inputs = []
            for spec in inputs:
                if spec.reference is None:
                    continue
                namespace, _, name = spec.reference.partition(".")
                value = ctx.cache.get(namespace, name, _MISSING)
                if value is not _MISSING:
                    seeded.append((namespace, name, self._on_cluster(value)))
        return {
            "node": ctx.node,
            "workflow": ctx.workflow,
            "run_id": ctx.run_id,
            "attempt": ctx.attempt,
            "inputs": {name: self._on_cluster(value) for name, value in ctx.inputs.items()},
            "seeded": seeded,
        }

    async def _register_plugin(self) -> None:
        """Once per backend, before the first submit (concurrent first calls wait for it)."""
        if self._plugin_ready is not None:
            await self._plugin_ready.wait()
            return
        self._plugin_ready = anyio.Event()
        try:
            register = partial(self.client.register_plugin, _CancelAsyncActions(), name=PLUGIN_NAME)
            if self.client.asynchronous:
                await register()
            else:
                await anyio.to_thread.run_sync(register)
        finally:
            self._plugin_ready.set()

    async def _result(self, future: Any) -> _Done:
        if self.client.asynchronous:
            return await future  # type: ignore[no-any-return]
        finished = anyio.Event()
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: _wake(loop, finished))
        await finished.wait()
        return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)  # type: ignore[no-any-return]

    async def _cancel(self, future: Any) -> None:
        if self.client.asynchronous:
            await self.client.cancel(future)
        else:
            await anyio.to_thread.run_sync(self.client.cancel, future, abandon_on_cancel=True)

    def __repr__(self) -> str:
        return f"DaskBackend({self.client!r})"


def _wake(loop: asyncio.AbstractEventLoop, finished: anyio.Event) -> None:
    """Called in Dask's callback thread: set ``finished`` on the notebook's loop."""
    try:
        loop.call_soon_threadsafe(finished.set)
    except RuntimeError:  # the loop closed meanwhile: nobody waits any more
        pass


_MISSING: Any = object()


# -- worker side -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Done:
    """What an attempt sends back: its result, where it ran, and what it wrote through ``ctx``."""

    result: Any
    worker: str | None
    writes: list[tuple[str, str, Any]]


class _RecordingCache(Cache):
    """The worker's ``ctx.cache``: seeded with the node's inputs, recording every write."""

    def __init__(self, seeded: list[tuple[str, str, Any]]) -> None:
        super().__init__()
        for namespace, key, value in seeded:
            super().insert(namespace, key, value)
        self.writes: list[tuple[str, str, Any]] = []

    def insert(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` here and remember to write it to the run's cache."""
        super().insert(namespace, key, value)
        self.writes.append((namespace, key, value))


def _context(remote: dict[str, Any] | None) -> tuple[dict[str, Any], _RecordingCache | None]:
    if remote is None:
        return {}, None
    cache = _RecordingCache(remote["seeded"])
    ctx = NodeContext(remote["node"], remote["workflow"], remote["run_id"], remote["attempt"], remote["inputs"], cache)
    return {"ctx": ctx}, cache


def _worker_address() -> str | None:
    try:
        return str(distributed.get_worker().address)
    except ValueError:  # not on a worker (a test calling the wrapper directly)
        return None


def _run_sync(key: str, fn: Any, kwargs: dict[str, Any], remote: dict[str, Any] | None) -> _Done:
    """Run a sync action in the worker's thread pool."""
    extra, cache = _context(remote)
    address = _worker_address()
    try:
        result = fn(**kwargs, **extra)
        if inspect.isawaitable(result):
            result = anyio.run(_awaited, result)
    except Exception as exception:
        _tag(exception, address)
        raise
    return _Done(result, address, cache.writes if cache is not None else [])


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _run_async(key: str, fn: Any, kwargs: dict[str, Any], remote: dict[str, Any] | None) -> _Done:
    """Run an async action on the worker's event loop, cancellable through the worker plugin."""
    extra, cache = _context(remote)
    address = _worker_address()
    running = _running_scopes()
    try:
        with anyio.CancelScope() as scope:
            if running is not None:
                running[key] = scope
            result = await fn(**kwargs, **extra)
    except Exception as exception:
        _tag(exception, address)
        raise
    finally:
        if running is not None:
            running.pop(key, None)
    if scope.cancelled_caught:
        raise RuntimeError(f"task {key} was cancelled on worker {address}")
    return _Done(result, address, cache.writes if cache is not None else [])


def _tag(exception: Exception, address: str | None) -> None:
    """Remember where the attempt failed; the attribute travels with the pickled exception."""
    try:
        setattr(exception, _WORKER_ATTRIBUTE, address)
    except AttributeError:  # exceptions with __slots__
        pass


def _running_scopes() -> dict[str, anyio.CancelScope] | None:
    try:
        plugin = distributed.get_worker().plugins.get(PLUGIN_NAME)
    except ValueError:
        return None
    return plugin.running if isinstance(plugin, _CancelAsyncActions) else None


class _CancelAsyncActions(WorkerPlugin):  # type: ignore[misc,valid-type]
    """On each worker: when the scheduler cancels a running async action, cancel its scope."""

    def __init__(self) -> None:
        self.running: dict[str, anyio.CancelScope] = {}

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """Cancel the action's scope once its task leaves the executing state for good."""
        if finish in ("cancelled", "released", "forgotten"):
            scope = self.running.get(key) if isinstance(key, str) else None
            if scope is not None:
                scope.cancel()
