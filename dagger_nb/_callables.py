"""What every paradigm and every backend agree on about a function to call.

Below ``dag``, ``agents``, ``pubsub`` and ``backends``: a workflow's action, a
task agent and a pub/sub handler are all a :class:`Callee` to a backend, which
runs it and hands the result back; :func:`node_outputs` is the one reading of a
node's result as its named outputs (the executor's, and a Dask worker's when a
call sent ahead takes its inputs from another's result).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagger_nb.errors import ActionError

#: one ``record_usage`` call: tokens, cost, model
Usage = tuple[int, "float | None", "str | None"]
#: a value written to a cache: namespace, name, value
CacheWrite = tuple[str, str, Any]


def usage_problems(tokens: object, cost: object, model: object) -> list[str]:
    """What is wrong with the arguments of a ``record_usage`` call (DAG actions and task agents
    alike), each as a phrase; empty when they are fine. A boolean is not a number, and a model
    name must be storable text."""
    problems = []
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        problems.append(f"tokens must be a whole number >= 0, got {tokens!r}")
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < math.inf):
        problems.append(f"cost must be a finite number >= 0 (or None), got {cost!r}")
    if model is not None and not isinstance(model, str):
        problems.append(f"model must be a name (or None), got {model!r}")
    elif model is not None and not model.isascii():
        try:
            model.encode("utf-8")
        except UnicodeEncodeError:  # it could not be stored
            problems.append(f"model must be valid Unicode text, got {model!r}")
    return problems


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine: an ``async def`` function, a partial of one, or an
    object whose class defines ``async def __call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


@dataclass(frozen=True, slots=True)
class Callee:
    """A function a backend runs, with what the backend needs to know to run it.

    ``name`` names the call where it runs (a Dask key prefix); ``inline``: a sync
    function that is glue, cheap enough to run on the caller's loop; ``takes_ctx``:
    the call gets a context argument (see :class:`RemoteContext`), so it cannot be
    submitted before its inputs exist.
    """

    name: str
    fn: Callable[..., Any]
    is_async: bool
    inline: bool
    takes_ctx: bool

    @classmethod
    def of(cls, name: str, fn: Callable[..., Any], *, inline: bool = False, takes_ctx: bool = False) -> Callee:
        """``fn`` as a callee named ``name``, its async-ness detected."""
        return cls(name, fn, is_async_callable(fn), inline, takes_ctx)


@dataclass(frozen=True, slots=True)
class RemoteContext:
    """What a backend that runs a call in another process needs to give it a copy of its context.

    The caller keeps the context itself under keyword ``argument``; the backend
    drops it from the call, runs ``build(cache, usage, **fields)`` where the call
    runs (``build`` is pickled by reference, ``fields`` is plain data), with
    ``cache`` a fresh cache holding ``seeded`` and recording every write, and
    ``usage`` a list the copy appends its ``record_usage`` calls to. When the call
    returns, :meth:`replay` hands the writes and the usage back; when it fails, the
    usage alone (a failed attempt's usage was spent all the same).
    """

    argument: str
    build: Callable[..., Any]
    fields: Mapping[str, Any]
    seeded: Sequence[CacheWrite]
    replay: Callable[[Sequence[CacheWrite], Sequence[Usage]], None]


@dataclass(slots=True)
class OutputPrints:
    """Asks a backend that runs a call in another process to fingerprint the call's big outputs
    there, so that the caller need not hash them again once they arrive.

    Where the call ran, ``outputs(result)`` reads its result as named outputs, and each
    output for which ``is_big(value)`` holds gets ``fingerprint(value)`` in ``found``
    (output name -> fingerprint). The three are pickled to the worker (functions by
    reference, or partials of such). A backend that runs calls here ignores the request:
    hashing here is what the caller does anyway. ``found`` stays empty when the call fails
    or a value cannot be fingerprinted; the caller then hashes what it lacks itself.
    """

    outputs: Callable[[Any], Mapping[str, Any]]
    is_big: Callable[[Any], bool]
    fingerprint: Callable[[Any], str]
    found: dict[str, str] = field(default_factory=dict)

    def compute(self, result: Any) -> dict[str, str]:
        """The fingerprints of ``result``'s big outputs (empty if any of them has none)."""
        try:
            return {name: self.fingerprint(value) for name, value in self.outputs(result).items() if self.is_big(value)}
        except Exception:  # an unreadable result or a value without a fingerprint: the caller decides
            return {}


def node_outputs(node_id: str, declared: tuple[str, ...], result: Any) -> dict[str, Any]:
    """The cache entries a node's action ``result`` makes, by output name.

    One declared output takes the whole result; several take the same keys of a
    mapping; with none declared, a mapping's keys are the outputs and the whole
    mapping is also ``result`` (unless one of its keys is ``result``), and any other
    value is ``result``. ``None`` makes no output. Raises :class:`ActionError`.

    >>> node_outputs("cfg", (), {"rate": 0.1})
    {'rate': 0.1, 'result': {'rate': 0.1}}
    >>> node_outputs("cfg", (), {"result": 1, "extra": 2})
    {'result': 1, 'extra': 2}
    """
    if result is None:
        return {}
    if len(declared) == 1:
        return {declared[0]: result}
    if declared:
        if not isinstance(result, Mapping):
            raise ActionError(
                f"node '{node_id}' declares outputs {', '.join(declared)}, so its action must "
                f"return a mapping holding each; it returned {type(result).__name__}"
            )
        missing = [name for name in declared if name not in result]
        if missing:
            present = ", ".join(str(key) for key in list(result)[:8]) or "nothing"
            raise ActionError(
                f"action result is missing declared output(s): {', '.join(missing)} (it holds: {present})"
            )
        return {str(key): value for key, value in result.items()}
    if isinstance(result, Mapping):
        outputs = {str(key): value for key, value in result.items()}
        outputs.setdefault("result", result)
        return outputs
    return {"result": result}
