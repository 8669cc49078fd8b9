"""Task agents and the registry the task manager looks them up in.

An agent is a function ``f(input: dict, ctx: TaskContext) -> dict``; async
functions are awaited, sync ones run in a worker thread. Its optional input
and output JSON Schemas are compiled once, when the agent is defined, so an
invalid schema is an error at decoration time.

>>> registry = TaskAgentRegistry()
>>> @task_agent(name="echo", registry=registry)
... async def echo(input, ctx):
...     return {"said": input.get("text", "")}
>>> registry.names()
['echo']
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from dagger_nb._callables import is_async_callable
from dagger_nb._registry import NameLookup
from dagger_nb.errors import TaskError
from dagger_nb.schema import CompiledSchema, compile_schema

AgentFunction = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class TaskAgent:
    """A registered agent: its function, description and compiled schemas.

    Calling the agent calls its function, so a decorated function stays usable.
    """

    name: str
    fn: AgentFunction
    description: str = ""
    input_schema: CompiledSchema | None = None
    output_schema: CompiledSchema | None = None
    is_async: bool = False

    @classmethod
    def from_function(
        cls,
        fn: AgentFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        input_schema: dict[str, Any] | str | None = None,
        output_schema: dict[str, Any] | str | None = None,
    ) -> TaskAgent:
        """Wrap ``fn``, compiling its schemas (:class:`InvalidSchemaError` if one is invalid)."""
        agent_name = name or getattr(fn, "__name__", None)
        if not agent_name:
            raise TaskError("a task agent needs a name")
        return cls(
            name=agent_name,
            fn=fn,
            description=description if description is not None else inspect.getdoc(fn) or "",
            input_schema=compile_schema(input_schema, where=f"agent '{agent_name}' input schema"),
            output_schema=compile_schema(output_schema, where=f"agent '{agent_name}' output schema"),
            is_async=is_async_callable(fn),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class TaskAgentRegistry(NameLookup[TaskAgent]):
    """Agents by name. Create one per notebook, test or application to keep them apart.

    Registering a name again replaces the old agent, with a note on the ``dagger_nb`` logger
    (notebook users re-run cells); jobs look agents up when a task starts.
    """

    kind = "task agent"

    def register(
        self, name: str, agent: TaskAgent | AgentFunction, *, replace: bool | None = None
    ) -> TaskAgent:
        """Register ``agent`` (a :class:`TaskAgent` or a plain function) under ``name``, replacing
        any agent of that name (``replace=`` is deprecated: redefining always replaces)."""
        if replace is not None:
            _replace_deprecated()
        if not name:
            raise TaskError("a task agent needs a non-empty name")
        if not isinstance(agent, TaskAgent):
            if not callable(agent):
                raise TaskError(f"task agent '{name}' must be callable, got {type(agent).__name__}")
            agent = TaskAgent.from_function(agent, name=name)
        return self._store(name, agent)


def _replace_deprecated() -> None:
    warnings.warn("replace= is deprecated; registering a task agent again always replaces it",
                  DeprecationWarning, stacklevel=3)


#: The registry used when none is given (by :func:`task_agent` and :class:`TaskManager`).
default_agent_registry = TaskAgentRegistry()


@overload
def task_agent(fn: AgentFunction, /) -> TaskAgent: ...


@overload
def task_agent(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    input_schema: dict[str, Any] | str | None = None,
    output_schema: dict[str, Any] | str | None = None,
    registry: TaskAgentRegistry | None = None,
    replace: bool | None = None,
) -> Callable[[AgentFunction], TaskAgent]: ...


def task_agent(
    fn: AgentFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    input_schema: dict[str, Any] | str | None = None,
    output_schema: dict[str, Any] | str | None = None,
    registry: TaskAgentRegistry | None = None,
    replace: bool | None = None,
) -> TaskAgent | Callable[[AgentFunction], TaskAgent]:
    """Register the decorated function as a task agent (in ``registry`` or the default one).

    ``name`` defaults to the function's name and ``description`` to its
    docstring. Schemas are JSON Schema dicts or JSON text; an invalid one raises
    :class:`InvalidSchemaError` here, not when a task runs. Defining a name again
    replaces the old agent (``replace=`` is deprecated).
    """
    if replace is not None:
        _replace_deprecated()

    def decorate(function: AgentFunction) -> TaskAgent:
        agent = TaskAgent.from_function(
            function,
            name=name,
            description=description,
            input_schema=input_schema,
            output_schema=output_schema,
        )
        target = default_agent_registry if registry is None else registry
        return target.register(agent.name, agent)

    return decorate if fn is None else decorate(fn)
