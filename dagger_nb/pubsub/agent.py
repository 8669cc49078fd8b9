"""Pub/sub agent definitions, the registry they live in, and the context a handler gets.

A handler is ``f(message: Message, ctx: PubSubContext)``; async handlers are
awaited on the event loop, sync ones run in a worker thread. Schemas are
compiled once, when the agent is defined, so an invalid schema fails at
decoration time.

>>> registry = PubSubAgentRegistry()
>>> @pubsub_agent("echo", subscribe=["in"], publish=["out"], registry=registry)
... async def echo(message, ctx):
...     await ctx.publish("out", message.payload)
>>> registry.names(), echo.subscribe, echo.publish
(['echo'], ('in',), ('out',))
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, overload

from dagger_nb._callables import is_async_callable
from dagger_nb._registry import NameLookup
from dagger_nb.errors import PubSubError
from dagger_nb.schema import CompiledSchema, compile_schema

if TYPE_CHECKING:
    from dagger_nb.cache import Cache
    from dagger_nb.pubsub.bus import PubSub
    from dagger_nb.pubsub.message import Message

Handler = Callable[..., Any]
Schema = dict[str, Any] | str | None


def channel_names(channels: str | Iterable[str], *, what: str) -> tuple[str, ...]:
    """``channels`` as a tuple of unique non-empty names (one string counts as one channel)."""
    names = (channels,) if isinstance(channels, str) else tuple(channels)
    for name in names:
        if not isinstance(name, str) or not name:
            raise PubSubError(f"{what}: channel names must be non-empty strings, got {name!r}")
    return tuple(dict.fromkeys(names))


class PubSubAgent:
    """A pub/sub agent definition: a handler, the channels it uses and its schemas.

    Register it on a :class:`~dagger_nb.pubsub.bus.PubSub` (as many times as you
    like: each registration is a separate subscriber with its own node id).
    Calling the agent calls its handler, so a decorated function stays testable.
    """

    def __init__(
        self,
        name: str,
        handler: Handler,
        *,
        subscribe: str | Iterable[str] = (),
        publish: str | Iterable[str] = (),
        input_schema: Schema = None,
        output_schema: Schema = None,
        description: str = "",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise PubSubError(f"a pub/sub agent needs a non-empty name, got {name!r}")
        if not callable(handler):
            raise PubSubError(
                f"pub/sub agent '{name}': handler must be callable, got {type(handler).__name__}"
            )
        self.name = name
        self.handler = handler
        self.subscribe = channel_names(subscribe, what=f"pub/sub agent '{name}' subscribe")
        self.publish = channel_names(publish, what=f"pub/sub agent '{name}' publish")
        self.input_schema: CompiledSchema | None = compile_schema(input_schema, where=f"agent '{name}' input")
        self.output_schema: CompiledSchema | None = compile_schema(
            output_schema, where=f"agent '{name}' output"
        )
        self.description = description or inspect.getdoc(handler) or ""
        self.is_async = is_async_callable(handler)
        functools.update_wrapper(self, handler, updated=())

    def __call__(self, message: Message, ctx: PubSubContext) -> Any:
        return self.handler(message, ctx)

    def __repr__(self) -> str:
        return f"<PubSubAgent {self.name!r} subscribe={list(self.subscribe)} publish={list(self.publish)}>"


class PubSubAgentRegistry(NameLookup[PubSubAgent]):
    """Pub/sub agent definitions by name; one per notebook, test or app keeps them apart.

    Defining an agent again under the same name replaces the old definition, with a note on the
    ``dagger_nb`` logger (notebook users re-run cells); registrations already made on a bus keep
    the definition they were made with. Iterating yields the names, as every registry does.
    """

    kind = "pub/sub agent"

    def register(self, agent: PubSubAgent) -> PubSubAgent:
        """Store ``agent`` under its name, replacing any previous one."""
        if not isinstance(agent, PubSubAgent):
            raise PubSubError(f"expected a PubSubAgent, got {type(agent).__name__}")
        return self._store(agent.name, agent)

    def add(self, agent: PubSubAgent) -> PubSubAgent:
        """Deprecated: :meth:`register`."""
        warnings.warn("PubSubAgentRegistry.add() is deprecated; use PubSubAgentRegistry.register()",
                      DeprecationWarning, stacklevel=2)
        return self.register(agent)

    def remove(self, name: str) -> None:
        """Deprecated: :meth:`unregister`."""
        warnings.warn("PubSubAgentRegistry.remove() is deprecated; use PubSubAgentRegistry.unregister()",
                      DeprecationWarning, stacklevel=2)
        self.unregister(name)

    def clear(self) -> None:
        """Forget every agent."""
        self._entries.clear()


#: The registry :func:`pubsub_agent` and :class:`PubSub` use when given none.
default_pubsub_registry = PubSubAgentRegistry()


@overload
def pubsub_agent(name: Handler, /) -> PubSubAgent: ...


@overload
def pubsub_agent(
    name: str | None = None,
    *,
    subscribe: str | Iterable[str] = (),
    publish: str | Iterable[str] = (),
    input_schema: Schema = None,
    output_schema: Schema = None,
    description: str = "",
    registry: PubSubAgentRegistry | None = None,
) -> Callable[[Handler], PubSubAgent]: ...


def pubsub_agent(
    name: str | Handler | None = None,
    *,
    subscribe: str | Iterable[str] = (),
    publish: str | Iterable[str] = (),
    input_schema: Schema = None,
    output_schema: Schema = None,
    description: str = "",
    registry: PubSubAgentRegistry | None = None,
) -> PubSubAgent | Callable[[Handler], PubSubAgent]:
    """Define a pub/sub agent from ``f(message, ctx)`` and add it to ``registry``.

    ``name`` defaults to the function's name; ``registry=None`` means
    :data:`default_pubsub_registry`. An invalid schema raises
    :class:`~dagger_nb.errors.InvalidSchemaError` here, not at delivery time.
    """
    target = default_pubsub_registry if registry is None else registry

    def decorate(handler: Handler) -> PubSubAgent:
        agent_name = name if isinstance(name, str) else getattr(handler, "__name__", "")
        agent = PubSubAgent(
            agent_name,
            handler,
            subscribe=subscribe,
            publish=publish,
            input_schema=input_schema,
            output_schema=output_schema,
            description=description,
        )
        return target.register(agent)

    if callable(name):
        return decorate(name)
    return decorate


class PubSubContext:
    """What a handler gets besides the message: who it is and how to publish.

    ``agent`` is the definition, ``node_id`` this registration, ``cache`` the
    bus's shared :class:`~dagger_nb.cache.Cache` and ``pubsub`` the bus itself.
    """

    __slots__ = ("agent", "cache", "node_id", "pubsub")

    def __init__(self, pubsub: PubSub, agent: PubSubAgent, node_id: str) -> None:
        self.pubsub = pubsub
        self.agent = agent
        self.node_id = node_id
        self.cache: Cache = pubsub.cache

    def publish(
        self, channel: str, payload: Any, *, task_id: str | None = None
    ) -> Coroutine[Any, Any, Message]:
        """Publish ``payload`` on ``channel`` as this agent (await it).

        The agent's output schema is checked first
        (:class:`~dagger_nb.errors.SchemaValidationError`). Sync handlers run in
        a worker thread and must call :meth:`publish_sync` instead.
        """
        if self.pubsub._hop.off_loop:
            raise PubSubError(
                f"agent '{self.agent.name}': ctx.publish() must be awaited on the event loop; "
                "a sync handler runs in a worker thread, so call ctx.publish_sync(...)"
            )
        return self._publish(channel, payload, task_id)

    def publish_sync(self, channel: str, payload: Any, *, task_id: str | None = None) -> Message:
        """:meth:`publish` for sync handlers (which run in a worker thread); blocks until published.

        The call is carried to the event loop delivery runs on; on that loop
        itself (an async handler), ``await ctx.publish(...)`` instead.
        """
        if not self.pubsub._hop.off_loop:
            raise PubSubError(
                f"agent '{self.agent.name}': ctx.publish_sync() is for a sync handler's worker thread while "
                "delivery runs; an async handler awaits ctx.publish(...)"
            )
        return self.pubsub._hop.call_async(self._publish, channel, payload, task_id)

    async def _publish(self, channel: str, payload: Any, task_id: str | None) -> Message:
        schema = self.agent.output_schema
        if schema is not None:
            schema.validate(payload)
        return await self.pubsub._publish(channel, payload, self.node_id, task_id)

    def __repr__(self) -> str:
        return f"<PubSubContext {self.node_id}>"
