"""What a node reads and stores: its inputs resolved from the cache, its outputs written back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb.cache import INPUTS, Deferred
from dagger_nb.dag.actions import node_outputs
from dagger_nb.dag.spec import brief_list
from dagger_nb.errors import DaggerError

if TYPE_CHECKING:
    from dagger_nb.dag.actions import Action
    from dagger_nb.dag.run import Run
    from dagger_nb.dag.spec import NodeSpec

_MISSING: Any = object()


class InputMissing(DaggerError):
    """An input's reference was not produced; retrying cannot help."""


def resolve_inputs(run: Run, node_id: str, *, backend: object = None) -> dict[str, Any]:
    """The keyword arguments of ``node_id``'s action; :class:`InputMissing` naming an input whose
    reference was not produced (and what its node did produce). A value kept elsewhere
    (:class:`~dagger_nb.cache.Deferred`) is passed on unfetched to a ``backend`` that takes it
    (``takes_deferred``: a Dask backend hands its future to the cluster)."""
    kwargs: dict[str, Any] = {}
    cache = run.run_cache
    # node outputs straight from the shared cache (the run's view would only pass them on)
    read = cache.shared.peek if getattr(backend, "takes_deferred", False) else cache.shared.get
    for name, namespace, key, literal, reference in run.plan.inputs[node_id]:
        if namespace is None:
            kwargs[name] = literal
            continue
        value = cache.inputs.get(key, _MISSING) if namespace == INPUTS else read(namespace, key, _MISSING)
        if value is _MISSING:
            if namespace == "inputs":
                raise InputMissing(
                    f"input '{name}' references run input '{key}' ('{reference}'), which was not given"
                )
            raise InputMissing(
                f"input '{name}' references '{reference}', which node '{namespace}' did not produce "
                f"({_produced(run, namespace)})"
            )
        kwargs[name] = value
    return kwargs


def _produced(run: Run, node_id: str) -> str:
    outcome = run.outcomes.get(node_id)
    if outcome is not None and outcome.status not in ("succeeded", "cached"):
        return f"it is {outcome.status}"
    keys = sorted(run.cache.namespace(node_id))
    if not keys:
        return "it produced nothing"
    return f"it produced: {brief_list(keys, limit=8)}"


async def readable(run: Run, result: Any, *, hooks: bool) -> Any:
    """``result``, fetched here if it was kept elsewhere (:class:`~dagger_nb.cache.Deferred`) and
    the run store (which keeps values, not handles) or ``hooks`` (which read outputs) need it."""
    if isinstance(result, Deferred) and (run.journal is not None or hooks):
        return await anyio.to_thread.run_sync(result.fetch)
    return result


def store_outputs(run: Run, node: NodeSpec, action: Action, result: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Store ``result`` as the node's outputs; returns them and the keys the action had written
    itself (through ``ctx``, during this attempt), which its return value does not overwrite.

    Only writes made through this run's cache count (see :meth:`RunCache.take_written`): a value
    another run of the same workflow stored meanwhile, an earlier attempt's or a snapshot's
    restored on resume is not the action's.
    """
    cache = run.run_cache
    if not node.outputs and not action.takes_ctx and result is not None and not isinstance(result, Mapping):
        cache.shared.insert(node.id, "result", result)  # the usual case, as node_outputs reads it
        return {"result": result}, ()
    outputs = node_outputs(node.id, tuple(o.name for o in node.outputs), result)
    own = cache.take_written(node.id) if action.takes_ctx else ()
    written = tuple(key for key in outputs if key in own)
    shared = cache.shared  # the return value is the run's, not a write by the action
    for key, value in outputs.items():
        if key in written:
            outputs[key] = cache.get(node.id, key)
        else:
            shared.insert(node.id, key, value)
    return outputs, written


def kept_message(node_id: str, written: Sequence[str]) -> str:
    """The note (and warning) for output keys the action wrote itself and also returned."""
    keys = ", ".join(f"'{key}'" for key in written)
    return (f"node '{node_id}': the action wrote {keys} to the cache itself and also returned a value "
            f"for {'it' if len(written) == 1 else 'them'}; the value it wrote is kept")
