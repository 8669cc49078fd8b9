"""What a bus shows: pandas frames of its history, agents and channels, and its DOT graph."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from dagger_nb.graph import STATUS_COLOURS, Digraph
from dagger_nb.pubsub._state import Channel, DeadLetter, Node, Record

if TYPE_CHECKING:
    import pandas as pd

HISTORY_COLUMNS = ["message_id", "timestamp", "channel", "source", "payload", "delivered_to"]
DEAD_LETTER_COLUMNS = ["message_id", "channel", "agent", "reason", "traceback", "logs"]
AGENT_COLUMNS = [
    "node_id",
    "agent",
    "description",
    "subscribe",
    "publish",
    "status",
    "queued",
    "delivered",
    "failed",
    "rejected",
    "last_message_at",
    "last_logs",
]
CHANNEL_COLUMNS = ["channel", "schema", "subscribers", "publishers", "messages"]


def history_frame(records: Iterable[Record], channel: str | None) -> pd.DataFrame:
    """One row per message, in publish order."""
    import pandas as pd

    rows = []
    for record in records:
        message = record.message
        if channel is None or message.channel == channel:
            rows.append(
                (
                    message.message_id,
                    message.timestamp,
                    message.channel,
                    message.source,
                    message.payload,
                    list(record.delivered_to),
                )
            )
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def dead_letter_frame(dead: Iterable[DeadLetter]) -> pd.DataFrame:
    """One row per dead letter, oldest first."""
    import pandas as pd

    rows = [(letter.message_id, letter.channel, letter.agent, letter.reason, letter.traceback, letter.logs)
            for letter in dead]
    return pd.DataFrame(rows, columns=DEAD_LETTER_COLUMNS)


def node_status(node: Node, *, running: bool) -> str:
    """``running`` (in its handler), ``idle`` (waiting for messages) or ``stopped`` (no delivery)."""
    if node.in_handler:
        return "running"
    return "idle" if running and node.active else "stopped"


def agent_frame(nodes: Iterable[Node], *, running: bool) -> pd.DataFrame:
    """One row per registered node."""
    import pandas as pd

    rows = [
        (
            node.node_id,
            node.name,
            node.agent.description,
            list(node.agent.subscribe),
            list(node.agent.publish),
            node_status(node, running=running),
            node.pending,
            node.delivered,
            node.failed,
            node.rejected,
            node.last_message_at,
            [] if node.last_logs is None else list(node.last_logs),
        )
        for node in nodes
    ]
    frame = pd.DataFrame(rows, columns=AGENT_COLUMNS)
    frame["last_message_at"] = pd.to_datetime(frame["last_message_at"], unit="s", utc=True)
    return frame


def channel_frame(channels: Iterable[Channel], nodes: Iterable[Node]) -> pd.DataFrame:
    """One row per channel."""
    import pandas as pd

    nodes = list(nodes)
    rows = [
        (
            channel.name,
            None if channel.schema is None else channel.schema.schema,
            [node.node_id for node in channel.subscribers],
            [node.node_id for node in nodes if channel.name in node.agent.publish],
            channel.messages,
        )
        for channel in channels
    ]
    return pd.DataFrame(rows, columns=CHANNEL_COLUMNS)


_AGENT_COLOURS = {"running": STATUS_COLOURS["running"], "idle": "#ffffff", "stopped": "#d0d0d0"}


def dot_graph(channels: Iterable[Channel], nodes: Iterable[Node], *, running: bool) -> str:
    """Agents as boxes and channels as ellipses.

    Publish edges go agent → channel (dashed), subscribe edges channel → agent.
    """
    dot = Digraph("pubsub")
    for channel in channels:
        label = f"#{channel.name}\n{channel.messages} messages"
        if channel.schema is not None:
            label += "\n(schema)"
        dot.node(f"channel:{channel.name}", label=label, shape="ellipse", fillcolor="#e8f0fe")
    for node in nodes:
        status = node_status(node, running=running)
        label = f"{node.name}\n{node.node_id}\n{node.delivered} handled, {node.failed} failed"
        colour = STATUS_COLOURS["failed"] if node.failed or node.rejected else _AGENT_COLOURS[status]
        dot.node(f"agent:{node.node_id}", label=label, fillcolor=colour, tooltip=node.agent.description)
        for name in node.agent.subscribe:
            dot.edge(f"channel:{name}", f"agent:{node.node_id}")
        for name in node.agent.publish:
            dot.edge(f"agent:{node.node_id}", f"channel:{name}", style="dashed")
    return dot.source()
