"""The worker side: the wrappers a Dask worker runs around each call, and the cancelling plugin.

They are pickled by reference, so workers need ``dagger-nb`` installed.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from dagger_nb._callables import OutputPrints, node_outputs
from dagger_nb._loop import run_sync
from dagger_nb.backends.dask._support import _PluginBase, dask_pickle, distributed, is_dask_collection, sizeof
from dagger_nb.backends.dask.batching import _Pick
from dagger_nb.cache import Cache
from dagger_nb.errors import ActionError

#: The largest result, pickled, that a worker pushes to the notebook with the task's end; a bigger
#: one is fetched from the worker. The scheduler keeps the last 1000 events of each client's topic
#: (Dask's ``distributed.admin.low-level-log-length``), so this bounds what it holds for us.
PUSH_LIMIT = 4096
_WORKER_ATTRIBUTE = "_dagger_nb_worker"
#: the usage a failed attempt recorded (``ctx.record_usage``), travelling with its exception
_USAGE_ATTRIBUTE = "_dagger_nb_usage"


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
    #: the fingerprints of the result's big outputs, when the call came with an :class:`OutputPrints`
    prints: dict[str, str] = field(default_factory=dict)
    #: (in the copy pushed to the notebook) ``result`` stayed on the cluster, in the task's own copy
    kept: bool = False


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
    cache = _RecordingCache([(namespace, key, _value(value)) for namespace, key, value in remote["seeded"]])
    fields = {name: _value(value) for name, value in remote["fields"].items()}
    return {remote["argument"]: remote["build"](cache, cache.usage, **fields)}, cache


def _value(value: Any) -> Any:
    """An input as the action takes it: a result another task kept on the cluster arrives as that
    task's ``_Done`` (the notebook passed its future), of which the action takes the result."""
    if type(value) is _Done:
        return value.result
    if type(value) is dict:
        return {key: _value(item) for key, item in value.items()}
    return value


def _values(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return tuple(map(_value, args)), {name: _value(value) for name, value in kwargs.items()}


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
    prints: OutputPrints | None = None,
    *upstream: _Done,
) -> _Done:
    """Run a sync action in the worker's thread pool."""
    extra, cache = _context(remote)
    address = _worker_address()
    try:
        call = _arguments(picks, upstream, args, kwargs)
        if isinstance(call, str):
            return _Done(None, address, [], missed=call)
        args, kwargs, picked = call
        result = fn(*args, **kwargs, **picked, **extra)
        if inspect.isawaitable(result) and not isinstance(result, distributed.Future):
            result = run_sync(_awaited, result)  # no loop runs in a worker's thread: anyio.run
        held = _holds_futures(result)
        if held:
            distributed.get_client().publish_dataset(result, name=key)
    except Exception as exception:
        _tag(exception, address, cache)
        raise
    found = prints.compute(result) if prints is not None and not held else {}
    return _finished(key, push_to, result, address, cache, held=held, prints=found,
                     keep=remote is None and prints is None)


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
    prints: OutputPrints | None = None,
    *upstream: _Done,
) -> _Done:
    """Run an async action on the worker's event loop, cancellable through the worker plugin."""
    extra, cache = _context(remote)
    address = _worker_address()
    try:
        call = _arguments(picks, upstream, args, kwargs)
        if isinstance(call, str):
            return _Done(None, address, [], missed=call)
        args, kwargs, picked = call
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
    found = {}
    if prints is not None and not held:  # hashing a big value must not block the worker's loop
        found = await anyio.to_thread.run_sync(prints.compute, result)
    return _finished(key, push_to, result, address, cache, held=held, prints=found,
                     keep=remote is None and prints is None)


def _arguments(
    picks: tuple[_Pick, ...], upstream: tuple[_Done, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]] | str:
    """The call's arguments and the values it picks from its upstream calls, or why it cannot
    run (it reports that instead)."""
    picked = _picked(picks, upstream)
    if isinstance(picked, str):
        return picked
    return *_values(args, kwargs), picked


def _finished(
    key: str, push_to: tuple[str, str], result: Any, address: str | None, cache: Any, *,
    held: bool, prints: dict[str, Any], keep: bool,
) -> _Done:
    """The call's ``_Done`` (with what its context wrote and used), pushed if small."""
    writes, usage = (cache.writes, cache.usage) if cache is not None else ([], [])
    done = _Done(None if held else result, address, writes, held, usage=usage, prints=prints)
    return _push_if_small(key, push_to, done, keep=keep)


def _push_if_small(key: str, push_to: tuple[str, str], done: _Done, *, keep: bool = False) -> _Done:
    """``done``, also pushed to the notebook (see :class:`_Gatherer`) if it pickles small.

    With ``keep`` (nothing in the notebook asked for the value: no context to write
    back, no fingerprints to take), a big result stays here, in the task's ``done``,
    and the notebook gets ``done`` without it (``kept``): its cache holds a handle
    that fetches the value when somebody reads it. Only a result whose outputs the
    notebook can name without it stays: not a mapping (its keys may be outputs), not None.
    """
    if done.worker is None:  # not on a worker: a test calling the wrapper
        return done
    try:
        if sizeof(done.result) + sizeof(done.writes) > PUSH_LIMIT:  # estimated first: never pickled twice
            if not keep or done.held or done.result is None or isinstance(done.result, Mapping):
                return done
            payload = dask_pickle.dumps(_Done(None, done.worker, [], usage=done.usage, kept=True))
        else:
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
