"""Actions: the Python functions that workflow nodes run.

>>> registry = ActionRegistry()
>>> @action(registry=registry)
... async def add(a, b):
...     return a + b
>>> "add" in registry, registry.names()
(True, ['add'])

A node's resolved inputs arrive as keyword arguments named after the inputs;
a parameter called ``ctx`` receives the :class:`NodeContext`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from dagger_nb._callables import (
    CacheWrite,
    Callee,
    RemoteContext,
    Usage,
    is_async_callable,
    node_outputs,
    usage_problems,
)
from dagger_nb._registry import NameLookup
from dagger_nb.cache import Cache
from dagger_nb.errors import ActionDefinitionError, ActionError, ActionNotFound

if TYPE_CHECKING:
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.run import Run, RunHandle

ActionFunction = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Action(Callee):
    """A registered function with what the executor needs to know to call it (a backend's
    :class:`~dagger_nb._callables.Callee`: ``name``, ``fn``, ``is_async``, ``inline``, ``takes_ctx``)."""

    takes_any_keyword: bool
    parameters: frozenset[str]
    #: False: an incremental run never reuses a stored result of it (random, time, side effects)
    cache: bool = True

    @classmethod
    def wrap(cls, name: str, fn: ActionFunction, *, inline: bool = False, cache: bool = True) -> Action:
        """Inspect ``fn`` once so each call is cheap."""
        if not callable(fn):
            raise ActionDefinitionError(f"action '{name}' must be callable, got {type(fn).__name__}")
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        parameters = frozenset(signature.parameters) if signature else frozenset()
        takes_any_keyword = signature is None or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
        )
        return cls(name, fn, is_async_callable(fn), inline, "ctx" in parameters, takes_any_keyword, parameters, cache)

    def accepts(self, name: str) -> bool:
        """Whether the function takes a keyword argument ``name``."""
        return self.takes_any_keyword or name in self.parameters

    def accepted(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` without the arguments the function does not take.

        Rust-style actions read some of their node's inputs from the cache themselves.
        """
        if self.takes_any_keyword or self.parameters.issuperset(kwargs):
            return kwargs
        return {key: value for key, value in kwargs.items() if key in self.parameters}


def check_usage(node: str, tokens: object, cost: object, model: object) -> Usage:
    """The checked arguments of ``ctx.record_usage``; :class:`ActionError` naming the node and
    what is wrong (a boolean is not a number)."""
    problems = usage_problems(tokens, cost, model)
    if problems:
        raise ActionError(f"node '{node}': record_usage(): {'; '.join(problems)}")
    return tokens, (None if cost is None else float(cost)), model  # type: ignore[return-value,arg-type]


class ActionRegistry(NameLookup[Action]):
    """Named actions. Registering a name again replaces it, with a note on the ``dagger_nb`` logger
    (notebooks redefine often); ``unregister``, ``get``, ``names()``, ``in``, ``len`` and iteration
    over the names as every registry has them."""

    missing = ActionNotFound
    kind = "action"

    def register(self, name: str, fn: ActionFunction, *, inline: bool = False, cache: bool = True) -> Action:
        """Register ``fn`` as action ``name``; ``inline=True`` runs a sync function on the loop;
        ``cache=False``: incremental runs never reuse its results."""
        if not isinstance(name, str) or not name:
            raise ActionDefinitionError(f"action name must be a non-empty string, got {name!r}")
        if not isinstance(cache, bool):
            raise ActionDefinitionError(f"action '{name}': cache must be True or False, got {cache!r}")
        return self._store(name, Action.wrap(name, fn, inline=inline, cache=cache))


#: The registry used when none is given.
default_registry = ActionRegistry()


@overload
def action(fn: ActionFunction, /) -> ActionFunction: ...
@overload
def action(
    name: str | None = None, /, *, registry: ActionRegistry | None = None, inline: bool = False, cache: bool = True
) -> Callable[[ActionFunction], ActionFunction]: ...
@overload
def action(
    *, name: str | None = None, registry: ActionRegistry | None = None, inline: bool = False, cache: bool = True
) -> Callable[[ActionFunction], ActionFunction]: ...


def action(
    fn_or_name: ActionFunction | str | None = None,
    /,
    *,
    name: str | None = None,
    registry: ActionRegistry | None = None,
    inline: bool = False,
    cache: bool = True,
) -> Any:
    """Register a function as an action: ``@action``, ``@action("name")`` or ``@action(name=...)``.

    The function is returned unchanged, so it can still be called directly. ``cache=False``
    marks an action whose result an incremental run must never reuse (it reads the time, draws
    random numbers or has side effects): it always runs.

    >>> registry = ActionRegistry()
    >>> @action("double", registry=registry)
    ... def twice(x):
    ...     return 2 * x
    >>> registry.names(), twice(4)
    (['double'], 8)
    """
    target = registry if registry is not None else default_registry

    def decorate(fn: ActionFunction) -> ActionFunction:
        chosen = name or (fn_or_name if isinstance(fn_or_name, str) else None) or fn.__name__
        target.register(chosen, fn, inline=inline, cache=cache)
        return fn

    if callable(fn_or_name):
        return decorate(fn_or_name)
    return decorate


@dataclass(slots=True)
class NodeContext:
    """What an action can learn about the node it runs for (the ``ctx`` parameter)."""

    node: str
    workflow: str
    run_id: str
    attempt: int
    inputs: dict[str, Any]
    cache: Cache
    executor: DagExecutor | None = None
    _run: Run | None = field(default=None, repr=False)
    #: usage recorded where no run is at hand (on a Dask worker): it travels back with the result
    usage: list[Usage] | None = field(default=None, repr=False)

    def output(self, key: str, value: Any) -> None:
        """Store ``value`` as this node's output ``key`` (same as ``insert_value``)."""
        self.cache.insert(self.node, key, value)

    def record_usage(self, tokens: int, cost: float | None = None, model: str | None = None) -> None:
        """Report what this node's action used: ``tokens`` (a whole number >= 0), its ``cost`` and
        the ``model``. Call it as often as you like: the reports add up, every attempt counted.

        The totals are the node's ``tokens``/``cost``/``models`` in the report and the run's
        ``tokens``/``cost``. When the run's total passes ``config.max_tokens`` (or
        ``DagExecutor(max_tokens=...)``), the node fails with "token budget exceeded: N of M",
        is not retried, and the run follows ``on_failure``; the call raises
        :class:`TokenBudgetExceeded` so the action stops spending (on a Dask worker the usage
        travels back with the attempt and is checked then). Bad values raise :class:`ActionError`.
        """
        usage = check_usage(self.node, tokens, cost, model)
        if self._run is None:
            if self.usage is None:
                self.usage = []
            self.usage.append(usage)
            return
        exceeded = self._run.hop.call(self._run.add_usage, self.node, *usage)
        if exceeded is not None:
            raise exceeded

    def remote(self, references: Iterable[tuple[str, str] | None]) -> RemoteContext:
        """What a backend running the action in another process needs to give it a copy of this
        context: its plain fields, and the values the node's inputs read (``references``, each
        ``(namespace, key)`` as :attr:`InputSpec.source` gives it, None for a literal)."""
        seeded = []
        for source in references:
            if source is not None:
                value = self.cache.get(*source, _MISSING)
                if value is not _MISSING:
                    seeded.append((*source, value))
        fields = {"node": self.node, "workflow": self.workflow, "run_id": self.run_id, "attempt": self.attempt,
                  "inputs": self.inputs}
        return RemoteContext("ctx", remote_node_context, fields, seeded, self._replay)

    def _replay(self, writes: Sequence[CacheWrite], usage: Sequence[Usage]) -> None:
        for namespace, key, value in writes:
            self.cache.insert(namespace, key, value)
        self.replay_usage(usage)

    def replay_usage(self, usage: Sequence[Usage]) -> None:
        """Count usage recorded by a remote copy of this context (a Dask worker's) here; never raises
        for the budget: the scheduler fails the node that passed it."""
        run = self._run
        for tokens, cost, model in usage:
            check_usage(self.node, tokens, cost, model)
            if run is not None:
                run.add_usage(self.node, tokens, cost, model)

    def add_node(self, action: str, **arguments: Any) -> str:
        """Add a node to the running workflow; see :meth:`RunHandle.add_node` for the arguments.

        A new node may depend on this node (it starts after this one finishes) or on any other.
        """
        self._not_reusable("it added nodes to the run")
        return self._handle().add_node(action, **arguments)

    def add_nodes(self, requests: list[Mapping[str, Any]]) -> list[str]:
        """Add several nodes at once, all or none (see :meth:`RunHandle.add_nodes`)."""
        self._not_reusable("it added nodes to the run")
        return self._handle().add_nodes(requests)

    def _not_reusable(self, why: str) -> None:
        # Reusing its result would skip what it did to the run: an incremental run must run it again.
        incremental = self._run.incremental if self._run is not None else None
        if incremental is not None:
            incremental.unstorable[self.node] = why

    async def ask_human(
        self, prompt: str, *, schema: dict[str, Any] | str | None = None, timeout: float | None = None,
        default: Any = None,
    ) -> Any:
        """Ask a person and wait for the answer; only this node waits, the run goes on.

        The answer must match ``schema`` (a JSON Schema). Without an answer within
        ``timeout`` seconds (default ``config.human_wait_minutes``), ``human_timeout_action``
        decides: ``autopilot`` returns ``default``; ``pause`` pauses the run and the question
        is asked again on resume.
        """
        handle = self._handle()
        self._not_reusable("it asked a person")
        return await handle._executor._ask_human(
            handle._run, self.node, prompt, schema=schema, timeout=timeout, default=default
        )

    def _handle(self) -> RunHandle:
        from dagger_nb.dag.run import RunHandle

        if self._run is None or self.executor is None:
            raise ActionError("this context is not attached to a run: it cannot add nodes or ask a person")
        return RunHandle(self._run, self.executor)


_MISSING: Any = object()


def remote_node_context(cache: Cache, usage: list[Usage], **fields: Any) -> NodeContext:
    """The copy of a :class:`NodeContext` an action gets where a backend runs it (see
    :meth:`NodeContext.remote`): no executor, ``cache`` holding the node's inputs."""
    return NodeContext(cache=cache, usage=usage, **fields)


__all__ = [
    "Action",
    "ActionFunction",
    "ActionRegistry",
    "NodeContext",
    "Usage",
    "action",
    "check_usage",
    "default_registry",
    "node_outputs",
    "remote_node_context",
]
