"""A damaged or foreign file is a StorageError naming the file (and the row, where known), never a raw error."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import dagger_nb
from dagger_nb.pubsub import PubSubAgentRegistry


def write_log(db: Path) -> None:
    """A healthy log: a channel with a schema, a registration, three messages, one dead letter."""
    registry = PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("reader", subscribe=["news"], input_schema={"type": "integer"}, registry=registry)
    async def reader(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        pass

    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.create_channel("news", schema={"type": ["integer", "string"]})
    bus.register("reader")

    async def fill() -> None:
        for payload in (1, "two", 3):
            await bus.publish("news", payload)
        await bus.run(until_idle=True)

    anyio.run(fill)
    bus.close()


def execute(sql: str) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        write_log(db)
        with sqlite3.connect(db) as connection:
            connection.executescript(sql)
        connection.close()

    return damage


def foreign_table(db: Path) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE pubsub_messages (id INTEGER PRIMARY KEY, body BLOB)")
    connection.close()


def random_bytes(db: Path) -> None:
    db.write_bytes(b"definitely not SQLite, just some bytes\x00\x01" * 200)


def truncated(db: Path) -> None:
    write_log(db)
    registry = PubSubAgentRegistry()
    bus = dagger_nb.PubSub(db=db, registry=registry)

    async def grow() -> None:
        for number in range(3000):
            await bus.publish("bulk", {"n": number, "text": "x" * 200})

    anyio.run(grow)
    bus.close()
    size = db.stat().st_size
    with open(db, "r+b") as file:
        file.truncate(size // 2)


def open_bus(db: Path) -> None:
    dagger_nb.PubSub(db=db, registry=PubSubAgentRegistry()).close()


def read_history(db: Path) -> None:
    bus = dagger_nb.PubSub(db=db, registry=PubSubAgentRegistry())
    try:
        bus.history_frame()
    finally:
        bus.close()


def replay_to_a_returning_agent(db: Path) -> None:
    registry = PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("newcomer", subscribe=["news"], registry=registry)
    async def newcomer(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        pass

    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.register("newcomer")
    try:
        report = bus.run_sync(until_idle=True)  # a broken delivery is a failed report, as a DAG run's is
        assert report.status == "failed" and report.error is not None
        raise report.error
    finally:
        bus.close()


def read_dead_letters(db: Path) -> None:
    bus = dagger_nb.PubSub(db=db, registry=PubSubAgentRegistry())
    try:
        bus.dead_letters_frame()
    finally:
        bus.close()


CASES = [
    pytest.param(
        execute("UPDATE pubsub_messages SET payload = '{broken' WHERE seq = 2"),
        read_history,
        r"the pub/sub log '{db}' is damaged: pubsub_messages row 2: payload is not JSON",
        id="corrupt-json-payload-history",
    ),
    pytest.param(
        execute("UPDATE pubsub_messages SET payload = '[1,' WHERE seq = 3"),
        replay_to_a_returning_agent,
        r"the pub/sub log '{db}' is damaged: pubsub_messages row 3: payload is not JSON",
        id="corrupt-json-payload-replay",
    ),
    pytest.param(
        execute("UPDATE pubsub_messages SET timestamp = 'yesterday' WHERE seq = 1"),
        read_history,
        r"the pub/sub log '{db}' is damaged: pubsub_messages row 1: timestamp 'yesterday' is not an ISO date",
        id="bad-timestamp",
    ),
    pytest.param(
        execute("UPDATE pubsub_messages SET channel = x'ff00' WHERE seq = 1"),
        read_history,
        r"the pub/sub log '{db}' is damaged: pubsub_messages row 1: channel b'\\xff\\x00' is not text",
        id="channel-not-text",
    ),
    pytest.param(
        execute("UPDATE pubsub_channels SET schema = 'nope' WHERE name = 'news'"),
        open_bus,
        r"the pub/sub log '{db}' is damaged: pubsub_channels row 'news': schema is not JSON",
        id="channel-schema-not-json",
    ),
    pytest.param(
        execute("""UPDATE pubsub_channels SET schema = '{"type": 5}' WHERE name = 'news'"""),
        open_bus,
        r"the pub/sub log '{db}' is damaged: pubsub_channels row 'news': .*schema",
        id="channel-schema-invalid",
    ),
    pytest.param(
        execute("UPDATE pubsub_channels SET schema = '[1, 2]' WHERE name = 'news'"),
        open_bus,
        r"the pub/sub log '{db}' is damaged: pubsub_channels row 'news': schema is not a JSON object",
        id="channel-schema-not-object",
    ),
    pytest.param(
        execute(
            "DROP TABLE pubsub_dead_letters;"
            " CREATE TABLE pubsub_dead_letters (message_id TEXT, why TEXT)"
        ),
        open_bus,
        r"'{db}' is not a dagger-nb pub/sub log: table pubsub_dead_letters has no column channel, agent, reason",
        id="foreign-columns",
    ),
    pytest.param(
        foreign_table,
        open_bus,
        r"'{db}' is not a dagger-nb pub/sub log: table pubsub_messages has no column seq, message_id",
        id="foreign-table",
    ),
    pytest.param(random_bytes, open_bus, r"'{db}': file is not a database", id="not-sqlite"),
    pytest.param(truncated, read_history, r"'{db}'.*malformed", id="truncated"),
]


@pytest.mark.parametrize(("damage", "read", "message"), CASES)
def test_a_damaged_log_is_a_storage_error_naming_the_file(
    tmp_path: Path, damage: Callable[[Path], None], read: Callable[[Path], None], message: str
) -> None:
    db = tmp_path / "bus.db"
    damage(db)
    with pytest.raises(dagger_nb.StorageError, match=message.replace("{db}", str(db))):
        read(db)
