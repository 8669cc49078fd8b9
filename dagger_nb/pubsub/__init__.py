"""Pub/sub: agents that talk over channels, with schema-checked messages and no silent loss.

>>> import anyio
>>> registry = PubSubAgentRegistry()
>>> @pubsub_agent("shout", subscribe=["words"], publish=["shouts"], registry=registry)
... async def shout(message, ctx):
...     await ctx.publish("shouts", message.payload.upper())
>>> async def main():
...     bus = PubSub(registry=registry)
...     bus.register("shout")
...     await bus.publish("words", "hello")
...     report = await bus.run(until_idle=True)
...     return report.status, report.delivered, bus.history_frame("shouts")["payload"].tolist()
>>> anyio.run(main)
(<PubSubStatus.STOPPED: 'stopped'>, 1, ['HELLO'])
"""

from __future__ import annotations

from dagger_nb.pubsub.agent import (
    PubSubAgent,
    PubSubAgentRegistry,
    PubSubContext,
    default_pubsub_registry,
    pubsub_agent,
)
from dagger_nb.pubsub.bus import PubSub
from dagger_nb.pubsub.events import (
    AgentRegistered,
    AgentUnregistered,
    ChannelCreated,
    DeliveryStarted,
    DeliveryStopped,
    HandlerFailed,
    MessageDelivered,
    MessagePublished,
    MessageRejected,
    PubSubEvent,
)
from dagger_nb.pubsub.handle import PubSubHandle
from dagger_nb.pubsub.message import Message
from dagger_nb.pubsub.report import PubSubReport, PubSubStatus

__all__ = [
    "AgentRegistered",
    "AgentUnregistered",
    "ChannelCreated",
    "DeliveryStarted",
    "DeliveryStopped",
    "HandlerFailed",
    "Message",
    "MessageDelivered",
    "MessagePublished",
    "MessageRejected",
    "PubSub",
    "PubSubAgent",
    "PubSubAgentRegistry",
    "PubSubContext",
    "PubSubEvent",
    "PubSubHandle",
    "PubSubReport",
    "PubSubStatus",
    "default_pubsub_registry",
    "pubsub_agent",
]
