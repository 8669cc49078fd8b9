"""Events a :class:`~dagger_nb.pubsub.bus.PubSub` emits for dashboards.

Every event carries a ``timestamp`` (seconds since the epoch, UTC), as the
DAG and task-agent events do; like theirs, events are shared by every subscriber,
so read them and never modify them. Iterate them with
``PubSub.subscribe_events()`` (a late subscriber first receives every event so
far) or attach a synchronous listener with ``PubSub.events.add_listener(fn)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import time

from dagger_nb.pubsub.message import Message


@dataclass(slots=True)
class ChannelCreated:
    """A channel appeared, explicitly or on first use."""

    channel: str
    has_schema: bool
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class AgentRegistered:
    """An agent definition was registered and given ``node_id``."""

    node_id: str
    agent: str
    subscribe: tuple[str, ...]
    publish: tuple[str, ...]
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class AgentUnregistered:
    """The agent ``node_id`` stopped receiving messages."""

    node_id: str
    agent: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class MessagePublished:
    """``message`` was accepted on its channel (already schema-checked)."""

    message: Message
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class MessageDelivered:
    """The handler of ``node_id`` finished with message ``message_id`` (it may have failed)."""

    message_id: str
    channel: str
    node_id: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class HandlerFailed:
    """The handler of ``node_id`` raised; the message went to the dead letters."""

    message_id: str
    channel: str
    node_id: str
    reason: str
    timestamp: float = field(default_factory=time)
    #: the handler's stack, trimmed to its own frames
    traceback: str | None = None
    #: what the failed call printed or logged, its latest lines (None: nothing)
    logs: list[str] | None = None


@dataclass(slots=True)
class MessageRejected:
    """A message failed ``node_id``'s input schema and was not handed to it."""

    message_id: str
    channel: str
    node_id: str
    reason: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class DeliveryStarted:
    """``run()`` (or ``start()``) began delivering messages."""

    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class DeliveryStopped:
    """Delivery ended (stopped, idle, timed out or cancelled)."""

    reason: str
    timestamp: float = field(default_factory=time)


PubSubEvent = (
    ChannelCreated
    | AgentRegistered
    | AgentUnregistered
    | MessagePublished
    | MessageDelivered
    | HandlerFailed
    | MessageRejected
    | DeliveryStarted
    | DeliveryStopped
)
