"""A dead letter read back from a bus's file keeps the failed handler's traceback, and an older
file (whose dead-letter table has no traceback column) gets the column when a bus opens it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

import dagger_nb
from dagger_nb.pubsub import PubSubAgentRegistry

pytestmark = pytest.mark.anyio

STRAY = os.fsdecode(b"\xff")  # a lone surrogate, as a stray byte in a file name becomes


def failing_bus(db: Path) -> dagger_nb.PubSub:
    registry = PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("parser", subscribe=["raw"], input_schema={"type": "object"}, registry=registry)
    async def parser(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        raise KeyError("body " + STRAY)

    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.register("parser")
    return bus


async def test_a_dead_letter_keeps_its_traceback_after_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    bus = failing_bus(db)
    await bus.publish("raw", {"x": 1})
    await bus.publish("raw", "not an object")  # rejected by the schema: no traceback
    await bus.run(until_idle=True)
    bus.close()

    again = dagger_nb.PubSub(db=db, registry=PubSubAgentRegistry())
    try:
        dead = again.dead_letters_frame()
    finally:
        again.close()
    assert list(dead.columns) == ["message_id", "channel", "agent", "reason", "traceback", "logs"]
    failed, rejected = dead.to_dict("records")
    assert failed["reason"] == "KeyError: 'body \\udcff'"
    stack = failed["traceback"]
    assert "in parser" in stack and 'raise KeyError("body " + STRAY)' in stack and "\\udcff" in stack
    assert stack.splitlines()[-1] == "KeyError: 'body \\udcff'"
    assert pd.isna(rejected["traceback"])


async def test_an_older_file_gets_the_traceback_column_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    bus = failing_bus(db)
    await bus.publish("raw", {"x": 1})
    await bus.run(until_idle=True)
    bus.close()
    with sqlite3.connect(db) as connection:  # as the first version wrote it: no traceback column
        connection.execute("ALTER TABLE pubsub_dead_letters DROP COLUMN traceback")
    connection.close()

    bus = failing_bus(db)
    try:
        assert bus.dead_letters_frame()["traceback"].isna().tolist() == [True]  # the old row, kept
        await bus.publish("raw", {"x": 2})
        await bus.run(until_idle=True)
        tracebacks = bus.dead_letters_frame()["traceback"].tolist()
    finally:
        bus.close()
    assert pd.isna(tracebacks[0]) and "KeyError" in tracebacks[1]
