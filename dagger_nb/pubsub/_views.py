"""The read-only side of a bus: its frames, graph, events and registrations (mixed into PubSub)."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from dagger_nb.errors import AgentNotFound, ChannelNotFound
from dagger_nb.events import EventStream
from dagger_nb.pubsub import views
from dagger_nb.pubsub._state import Channel, DeadLetter, Node, Record
from dagger_nb.pubsub.agent import PubSubAgent
from dagger_nb.pubsub.events import PubSubEvent

if TYPE_CHECKING:
    import pandas as pd

    from dagger_nb.pubsub._durable import Durability


class BusViews:
    """What :class:`~dagger_nb.pubsub.bus.PubSub` shows; the state it reads is the bus's own."""

    strict: bool
    events: EventStream[PubSubEvent]
    _channels: dict[str, Channel]
    _nodes: dict[str, Node]
    _records: list[Record]
    _dead: list[DeadLetter]
    _durable: Durability | None
    _running: bool

    def history_frame(self, channel: str | None = None) -> pd.DataFrame:
        """Every published message in order (or only ``channel``'s), with who handled it.

        Columns: ``message_id, timestamp, channel, source, payload, delivered_to``.
        """
        if channel is not None and self.strict and channel not in self._channels:
            raise ChannelNotFound(channel, self._channels)
        if self._durable is not None:
            return self._durable.history(channel)
        return views.history_frame(self._records, channel)

    def dead_letters_frame(self) -> pd.DataFrame:
        """Messages an agent could not take: ``message_id, channel, agent, reason, traceback, logs``
        (agent = node id; ``logs``: what the failed call printed or logged, None when nothing)."""
        if self._durable is not None:
            return views.dead_letter_frame(self._durable.dead_letters())
        return views.dead_letter_frame(self._dead)

    def agents_frame(self) -> pd.DataFrame:
        """One row per registered node with its channels, status, counters and ``last_logs`` (the
        latest lines its handler printed or logged)."""
        return views.agent_frame(self._nodes.values(), running=self._running)

    def channels_frame(self) -> pd.DataFrame:
        """One row per channel: schema, subscribers, publishers, message count."""
        return views.channel_frame(self._channels.values(), self._nodes.values())

    def to_dot(self) -> str:
        """Graphviz DOT of agents and channels (agent → channel publishes, channel → agent subscribes)."""
        return views.dot_graph(self._channels.values(), self._nodes.values(), running=self._running)

    def history(self, channel: str | None = None) -> pd.DataFrame:
        """Deprecated: :meth:`history_frame`."""
        _deprecated("history", "history_frame")
        return self.history_frame(channel)

    def dead_letters(self) -> pd.DataFrame:
        """Deprecated: :meth:`dead_letters_frame`."""
        _deprecated("dead_letters", "dead_letters_frame")
        return self.dead_letters_frame()

    def agents(self) -> pd.DataFrame:
        """Deprecated: :meth:`agents_frame`."""
        _deprecated("agents", "agents_frame")
        return self.agents_frame()

    def channels(self) -> pd.DataFrame:
        """Deprecated: :meth:`channels_frame`."""
        _deprecated("channels", "channels_frame")
        return self.channels_frame()

    def get_dot_graph(self) -> str:
        """Deprecated: :meth:`to_dot`."""
        _deprecated("get_dot_graph", "to_dot")
        return self.to_dot()

    def subscribe_events(self) -> AsyncIterator[PubSubEvent]:
        """The bus's events until it is closed, for dashboards: first the latest ones kept
        (a window of :data:`~dagger_nb.pubsub.bus.EVENT_WINDOW`), then new ones. A subscriber
        slower than the window skips ahead; the iterator's ``skipped`` counts what it missed."""
        return self.events.subscribe()

    def node(self, node_id: str) -> PubSubAgent:
        """The agent definition registered as ``node_id``."""
        try:
            return self._nodes[node_id].agent
        except KeyError:
            raise AgentNotFound(node_id, self._nodes) from None

    def node_ids(self, agent: str | None = None) -> list[str]:
        """Registered node ids, in registration order (only ``agent``'s when given)."""
        return [node_id for node_id, node in self._nodes.items() if agent is None or node.name == agent]


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"PubSub.{old}() is deprecated; use PubSub.{new}()", DeprecationWarning, stacklevel=3)
