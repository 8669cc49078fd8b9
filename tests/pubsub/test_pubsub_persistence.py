"""The SQLite log: history after a restart, redelivery of what was not delivered, one owner."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dagger_nb
from dagger_nb.pubsub import PubSubAgentRegistry

pytestmark = pytest.mark.anyio

Make = Callable[..., Any]


async def test_history_and_dead_letters_survive_a_restart(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make
) -> None:
    db = tmp_path / "bus.db"
    recorder("reader", subscribe=["news"], input_schema={"type": "integer"})
    bus = dagger_nb.PubSub(db=db, registry=registry)
    reader_id = bus.register("reader")
    sent = [await bus.publish("news", payload) for payload in (1, "two", 3)]
    await bus.run(until_idle=True)
    before = bus.history_frame()
    bus.close()

    again = dagger_nb.PubSub(db=db, registry=PubSubAgentRegistry())
    after = again.history_frame()
    assert after["message_id"].tolist() == [message.message_id for message in sent]
    assert after["payload"].tolist() == [1, "two", 3]
    assert after["delivered_to"].tolist() == [[reader_id], [], [reader_id]]
    assert after["timestamp"].tolist() == before["timestamp"].tolist()
    assert after["source"].tolist() == ["user"] * 3
    assert again.dead_letters_frame()[["message_id", "agent"]].values.tolist() == [[sent[1].message_id, reader_id]]
    assert again.channels_frame()["channel"].tolist() == ["news"]
    again.close()


async def test_undelivered_messages_go_to_the_agent_when_it_registers_again(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make
) -> None:
    db = tmp_path / "bus.db"
    recorder("archivist", subscribe=["news"])
    bus = dagger_nb.PubSub(db=db, registry=registry)
    old_id = bus.register("archivist")
    await bus.publish("news", "handled")
    await bus.run(until_idle=True)
    await bus.publish("news", "pending 1")
    await bus.publish("news", "pending 2")
    bus.close()  # a restart before delivery

    fresh = PubSubAgentRegistry()
    received: list[Any] = []

    @dagger_nb.pubsub_agent("archivist", subscribe=["news"], registry=fresh)
    async def archivist(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        received.append(message.payload)

    bus = dagger_nb.PubSub(db=db, registry=fresh)
    new_id = bus.register("archivist")
    await bus.run(until_idle=True)
    assert received == ["pending 1", "pending 2"]
    assert bus.history_frame()["delivered_to"].tolist() == [[old_id], [new_id], [new_id]]
    bus.close()

    bus = dagger_nb.PubSub(db=db, registry=fresh)
    bus.register("archivist")
    await bus.run(until_idle=True)
    assert received == ["pending 1", "pending 2"]
    bus.close()


async def test_an_agent_does_not_get_its_own_messages_back_after_a_restart(
    tmp_path: Path, registry: PubSubAgentRegistry
) -> None:
    db = tmp_path / "bus.db"
    heard: list[Any] = []

    @dagger_nb.pubsub_agent("echo", subscribe=["room"], publish=["room"], registry=registry)
    async def echo(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        heard.append(message.payload)
        if message.source == "user":
            await ctx.publish("room", f"echo {message.payload}")

    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.register("echo")
    await bus.publish("room", "hi")
    await bus.run(until_idle=True)
    bus.close()
    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.register("echo")
    await bus.run(until_idle=True)
    assert heard == ["hi"]
    assert bus.history_frame()["payload"].tolist() == ["hi", "echo hi"]
    bus.close()


async def test_channel_schemas_survive_a_restart(tmp_path: Path, registry: PubSubAgentRegistry) -> None:
    db = tmp_path / "bus.db"
    bus = dagger_nb.PubSub(db=db, registry=registry, strict=True)
    bus.create_channel("numbers", schema={"type": "integer"})
    bus.close()
    bus = dagger_nb.PubSub(db=db, registry=registry, strict=True)
    with pytest.raises(dagger_nb.SchemaValidationError, match="channel 'numbers'"):
        await bus.publish("numbers", "one")
    await bus.publish("numbers", 1)
    bus.close()


def test_a_second_bus_on_the_same_file_takes_it_over_from_the_first(
    tmp_path: Path, registry: PubSubAgentRegistry
) -> None:
    db = tmp_path / "bus.db"
    first = dagger_nb.PubSub(db=db, registry=registry)
    with pytest.warns(dagger_nb.DaggerWarning, match="took over .* the earlier one was closed"):
        second = dagger_nb.PubSub(db=db, registry=registry)
    assert first.closed and not second.closed
    second.close()
    dagger_nb.PubSub(db=db, registry=registry).close()


def test_a_missing_folder_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(dagger_nb.StorageError, match="does not exist"):
        dagger_nb.PubSub(db=tmp_path / "missing" / "bus.db")


async def test_every_message_and_delivery_is_logged_while_running(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make
) -> None:
    db = tmp_path / "bus.db"
    for index in range(2):
        recorder(f"r{index}", subscribe=["load"])
    async with dagger_nb.PubSub(db=db, registry=registry, queue_size=10) as bus:
        bus.register("r0")
        bus.register("r1")
        for number in range(500):
            await bus.publish("load", number)
    with sqlite3.connect(db) as connection:
        (messages,) = connection.execute("SELECT count(*) FROM pubsub_messages").fetchone()
        (deliveries,) = connection.execute("SELECT count(*) FROM pubsub_deliveries").fetchone()
    connection.close()
    assert (messages, deliveries) == (500, 1000)


async def test_unregistered_nodes_are_remembered(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make
) -> None:
    db = tmp_path / "bus.db"
    recorder("gone", subscribe=["x"])
    bus = dagger_nb.PubSub(db=db, registry=registry)
    gone = bus.register("gone")
    bus.unregister(gone)
    await bus.publish("x", 1)
    bus.close()
    bus = dagger_nb.PubSub(db=db, registry=registry)
    assert bus.agents_frame().empty
    bus.register("gone")
    await bus.run(until_idle=True)
    assert bus.history_frame()["delivered_to"].map(len).tolist() == [1]
    bus.close()
