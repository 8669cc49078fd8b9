"""What a pub/sub handler prints or logs (async, or sync in a worker thread) is kept per agent and
with the dead letter of a failed call; it still reaches stdout; the monitor shows it escaped."""

from __future__ import annotations

import html
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import dagger_nb
from dagger_nb.pubsub import PubSubAgentRegistry
from dagger_nb.pubsub._state import LAST_LOGS

pytestmark = pytest.mark.anyio

HOSTILE = "<img src=x onerror=alert(1)>"
STRAY = os.fsdecode(b"\xff")  # a lone surrogate, as a stray byte in a file name becomes


def bus_of(registry: PubSubAgentRegistry, *names: str) -> dagger_nb.PubSub:
    bus = dagger_nb.PubSub(registry=registry)
    for name in names:
        bus.register(name)
    return bus


def logs_of(bus: dagger_nb.PubSub, node: str) -> list[str]:
    agents = bus.agents_frame().set_index("node_id")
    return list(agents.loc[node, "last_logs"])


async def test_async_and_sync_handlers_keep_their_own_lines_and_still_print(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("loud", subscribe=["words"], registry=registry)
    async def loud(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        print(f"async got {message.payload}")
        logging.getLogger("loud").warning("warned about %s", message.payload)

    @dagger_nb.pubsub_agent("threaded", subscribe=["words"], registry=registry)
    def threaded(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        print(f"sync got {message.payload}")

    @dagger_nb.pubsub_agent("quiet", subscribe=["words"], registry=registry)
    async def quiet(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        return None

    bus = bus_of(registry, "loud", "threaded", "quiet")
    for word in ("one", "two"):
        await bus.publish("words", word)
    await bus.run(until_idle=True)
    assert logs_of(bus, "loud") == ["async got one", "WARNING:loud: warned about one",
                                    "async got two", "WARNING:loud: warned about two"]
    assert logs_of(bus, "threaded") == ["sync got one", "sync got two"]  # never another agent's lines
    assert logs_of(bus, "quiet") == []
    out = capsys.readouterr().out
    assert "async got two" in out and "sync got one" in out  # the cell still sees the output
    bus.close()


async def test_an_agent_keeps_only_its_latest_lines() -> None:
    registry = PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("chatty", subscribe=["n"], registry=registry)
    async def chatty(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        for line in range(30):
            print(f"message {message.payload} line {line}")

    bus = bus_of(registry, "chatty")
    for number in range(5):
        await bus.publish("n", number)
    await bus.run(until_idle=True)
    lines = logs_of(bus, "chatty")
    assert len(lines) == LAST_LOGS
    assert lines[-1] == "message 4 line 29" and lines[0] == f"message 3 line {30 - (LAST_LOGS - 30)}"
    bus.close()


@pytest.mark.parametrize("sync", [False, True])
async def test_a_failed_call_keeps_its_lines_on_its_dead_letter_and_event(sync: bool) -> None:
    registry = PubSubAgentRegistry()

    def fail(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        print(f"parsing {message.payload}")
        if message.payload == "bad":
            raise KeyError("body")

    async def fail_async(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        fail(message, ctx)

    agent = dagger_nb.pubsub_agent("parser", subscribe=["raw"], input_schema={"type": "string"}, registry=registry)
    agent(fail if sync else fail_async)
    bus = bus_of(registry, "parser")
    failures: list[Any] = []
    bus.events.add_listener(lambda event: type(event).__name__ == "HandlerFailed" and failures.append(event))
    await bus.publish("raw", "good")
    await bus.publish("raw", "bad")
    await bus.publish("raw", 3)  # rejected by the schema: no handler ran, no lines
    await bus.run(until_idle=True)
    dead = bus.dead_letters_frame()
    assert dead["logs"].tolist() == [["parsing bad"], None]  # only the failed call's lines
    assert [event.logs for event in failures] == [["parsing bad"]]
    assert logs_of(bus, "parser") == ["parsing good", "parsing bad"]
    bus.close()


async def test_the_monitor_shows_each_agents_latest_lines_escaped() -> None:
    from dagger_nb.notebook import PubSubMonitor

    registry = PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("echo", subscribe=["words"], registry=registry)
    async def echo(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        print(f"saw {message.payload}")
        if message.payload == "boom":
            raise ValueError("boom")

    bus = bus_of(registry, "echo")
    monitor = PubSubMonitor(bus)
    await bus.publish("words", HOSTILE)
    await bus.publish("words", "boom")
    await bus.run(until_idle=True)
    monitor.refresh()
    panel = monitor.agent_panel.value  # type: ignore[union-attr]
    assert HOSTILE not in panel and f"saw {html.escape(HOSTILE)}" in panel
    assert "dagger-agent-logs" in panel
    errors = monitor.errors.value
    assert "saw boom" in errors and HOSTILE not in errors
    monitor.close()
    bus.close()


def durable_failing_bus(db: Path) -> dagger_nb.PubSub:
    registry = PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("parser", subscribe=["raw"], registry=registry)
    def parser(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        print(f"parsing {message.payload} {STRAY}")
        raise KeyError("body")

    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.register("parser")
    return bus


async def test_a_durable_dead_letter_keeps_its_lines_after_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    bus = durable_failing_bus(db)
    await bus.publish("raw", 1)
    await bus.run(until_idle=True)
    bus.close()
    again = dagger_nb.PubSub(db=db, registry=PubSubAgentRegistry())
    try:
        logs = again.dead_letters_frame()["logs"].tolist()
    finally:
        again.close()
    assert logs == [["parsing 1 \\udcff"]]  # a stray byte's surrogate escaped, as the file can hold it


async def test_an_older_file_gets_the_logs_column_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    bus = durable_failing_bus(db)
    await bus.publish("raw", 1)
    await bus.run(until_idle=True)
    bus.close()
    with sqlite3.connect(db) as connection:  # as an earlier version wrote it: no logs column
        connection.execute("ALTER TABLE pubsub_dead_letters DROP COLUMN logs")
    connection.close()
    bus = durable_failing_bus(db)
    try:
        await bus.publish("raw", 2)
        await bus.run(until_idle=True)
        logs = bus.dead_letters_frame()["logs"].tolist()
    finally:
        bus.close()
    assert logs[0] is None and logs[1] == ["parsing 2 \\udcff"]
