"""Frames, the DOT graph and the events dashboards follow."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import anyio
import pandas as pd
import pytest

import dagger_nb
from dagger_nb.graph import dot_available, render_svg
from dagger_nb.pubsub import (
    AgentRegistered,
    AgentUnregistered,
    ChannelCreated,
    DeliveryStarted,
    DeliveryStopped,
    HandlerFailed,
    MessageDelivered,
    MessagePublished,
    MessageRejected,
    PubSubAgentRegistry,
)

Make = Callable[..., Any]


@pytest.mark.anyio
async def test_history_frame(registry: PubSubAgentRegistry, recorder: Make) -> None:
    recorder("reader", subscribe=["a"])
    bus = dagger_nb.PubSub(registry=registry)
    reader = bus.register("reader")
    first = await bus.publish("a", {"x": 1})
    await bus.publish("b", [1, 2], source="cron")
    await bus.run(until_idle=True)
    history = bus.history_frame()
    assert list(history.columns) == [
        "message_id",
        "timestamp",
        "channel",
        "source",
        "payload",
        "delivered_to",
    ]
    assert history["channel"].tolist() == ["a", "b"]
    assert history["source"].tolist() == ["user", "cron"]
    assert history["payload"].tolist() == [{"x": 1}, [1, 2]]
    assert history["delivered_to"].tolist() == [[reader], []]
    assert isinstance(history["timestamp"].dtype, pd.DatetimeTZDtype)
    assert history["timestamp"][0] == pd.Timestamp(first.timestamp)
    only_a = bus.history_frame("a")
    assert only_a["message_id"].tolist() == [first.message_id]
    empty = dagger_nb.PubSub(registry=registry)
    assert list(empty.history_frame().columns) == list(history.columns) and empty.history_frame().empty
    assert list(empty.dead_letters_frame().columns) == ["message_id", "channel", "agent", "reason", "traceback", "logs"]


@pytest.mark.anyio
async def test_agents_and_channels_frames(registry: PubSubAgentRegistry, recorder: Make) -> None:
    recorder("reader", subscribe=["news"], publish=["notes"], description="reads the news")
    bus = dagger_nb.PubSub(registry=registry)
    bus.create_channel("news", schema={"type": "string"})
    node = bus.register("reader")
    await bus.publish("news", "hello")
    agents = bus.agents_frame()
    assert agents.to_dict("records")[0] | {"last_message_at": None} == {
        "node_id": node,
        "agent": "reader",
        "description": "reads the news",
        "subscribe": ["news"],
        "publish": ["notes"],
        "status": "stopped",
        "queued": 1,
        "delivered": 0,
        "failed": 0,
        "rejected": 0,
        "last_message_at": None,
        "last_logs": [],
    }
    await bus.run(until_idle=True)
    agents = bus.agents_frame()
    assert (agents["queued"][0], agents["delivered"][0]) == (0, 1)
    assert isinstance(agents["last_message_at"][0], pd.Timestamp)
    channels = bus.channels_frame().set_index("channel")
    assert channels.loc["news", "schema"] == {"type": "string"}
    assert channels.loc["news", "subscribers"] == [node]
    assert channels.loc["notes", "publishers"] == [node]
    assert channels.loc["news", "messages"] == 1
    assert bus.node(node).name == "reader"
    assert bus.node_ids() == bus.node_ids("reader") == [node]
    assert bus.node_ids("other") == []


def test_dot_graph_draws_publish_and_subscribe_edges_escaped(registry: PubSubAgentRegistry) -> None:
    nasty = 'quote" <img src=x onerror=alert(1)> & \\ \n newline'
    dagger_nb.pubsub_agent("relay", subscribe=[nasty], publish=["out"], description=nasty, registry=registry)(
        lambda message, ctx: None
    )
    bus = dagger_nb.PubSub(registry=registry)
    node = bus.register("relay")
    dot = bus.to_dot()
    assert dot.startswith('digraph "pubsub" {')
    assert '"channel:out"' in dot
    assert f'"agent:{node}" -> "channel:out"' in dot
    assert f'"channel:quote\\" <img src=x onerror=alert(1)> &amp; \\\\ \\n newline" -> "agent:{node}"' in dot
    assert "\n newline" not in dot
    if dot_available():
        svg = render_svg(dot)
        assert "<svg" in svg and "<img" not in svg
        assert "&lt;img src=x onerror=alert(1)&gt;" in svg


@pytest.mark.anyio
async def test_events_tell_the_whole_story_with_timestamps(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    recorder("picky", subscribe=["news"], input_schema={"type": "integer"})

    @dagger_nb.pubsub_agent("crashy", subscribe=["news"], registry=registry)
    async def crashy(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        raise RuntimeError("no")

    bus = dagger_nb.PubSub(registry=registry)
    live: list[Any] = []
    bus.events.add_listener(live.append)
    picky = bus.register("picky")
    crash = bus.register("crashy")
    message = await bus.publish("news", "text")
    await bus.run(until_idle=True)
    bus.unregister(crash)
    kinds = [type(event) for event in live]
    assert kinds == [
        ChannelCreated,
        AgentRegistered,
        AgentRegistered,
        MessagePublished,
        DeliveryStarted,
        *sorted([MessageRejected, HandlerFailed, MessageDelivered], key=kinds.index),
        DeliveryStopped,
        AgentUnregistered,
    ]
    assert all(isinstance(event.timestamp, float) and event.timestamp > 1e9 for event in live)
    by_kind = {type(event): event for event in live}
    assert by_kind[MessagePublished].message == message
    assert by_kind[MessageRejected].node_id == picky
    assert by_kind[HandlerFailed].reason == "RuntimeError: no"
    assert by_kind[MessageDelivered].node_id == crash
    assert by_kind[DeliveryStopped].reason == "idle"
    assert by_kind[AgentRegistered].subscribe == ("news",)

    bus.close()
    replayed = [event async for event in bus.subscribe_events()]
    assert replayed == live


@pytest.mark.anyio
async def test_a_dashboard_follows_events_live(registry: PubSubAgentRegistry, recorder: Make) -> None:
    recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("reader")
    delivered = anyio.Event()

    async def dashboard() -> None:
        async for event in bus.subscribe_events():
            if isinstance(event, MessageDelivered):
                delivered.set()
                return

    async with anyio.create_task_group() as group:
        group.start_soon(dashboard)
        handle = bus.start()
        await bus.publish("news", 1)
        with anyio.fail_after(5):
            await delivered.wait()
        handle.stop()
        await handle


def test_the_graph_renders_with_graphviz(registry: PubSubAgentRegistry, recorder: Make) -> None:
    if not dot_available():
        pytest.skip("Graphviz is not installed")
    recorder("reader", subscribe=["news"], publish=["notes"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("reader")
    completed = subprocess.run(
        ["dot", "-Tsvg"], input=bus.to_dot().encode(), capture_output=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
