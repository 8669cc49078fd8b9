"""The SQLite log of a bus with ``db=``: messages, deliveries, dead letters, agents, channels.

Rows are collected in memory and written in batches, one transaction each:
while delivery runs, a writer task flushes whatever accumulated since its last
write (so a burst of messages costs a few transactions, not one each); outside
a run every change is written at once. Reopening the file loads everything
back, which is how ``history()`` survives a restart.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dagger_nb.errors import StorageError
from dagger_nb.pubsub.message import Message
from dagger_nb.storage import ProcessLock, open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS pubsub_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    timestamp TEXT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    payload TEXT NOT NULL,
    task_id TEXT
);
CREATE TABLE IF NOT EXISTS pubsub_deliveries (
    message_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pubsub_dead_letters (
    message_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    agent TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pubsub_nodes (
    node_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pubsub_channels (
    name TEXT PRIMARY KEY,
    schema TEXT
);
"""


@dataclass(slots=True)
class Snapshot:
    """Everything a log holds, in publish order, as loaded when the bus opens."""

    messages: list[Message] = field(default_factory=list)
    #: ``(message_id, node_id, outcome)`` with outcome ``delivered`` or ``rejected``.
    deliveries: list[tuple[str, str, str]] = field(default_factory=list)
    dead_letters: list[tuple[str, str, str, str]] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)
    channels: dict[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """Rows waiting to be written."""

    messages: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    nodes: list[tuple[Any, ...]] = field(default_factory=list)
    channels: list[tuple[Any, ...]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.messages or self.deliveries or self.dead_letters or self.nodes or self.channels)


class MessageLog:
    """An append-only SQLite log owned by one bus (and one live process) at a time."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._lock = ProcessLock(path, owner="PubSub")  # before touching the file: another live process may own it
        try:
            self._connection = open_database(path, schema=SCHEMA)
        except BaseException:
            self._lock.release()
            raise
        self.pending = Batch()
        self.closed = False

    def load(self) -> Snapshot:
        """Read the whole log back."""
        snapshot = Snapshot()
        query = self._connection.execute
        for message_id, timestamp, channel, source, payload, task_id in query(
            "SELECT message_id, timestamp, channel, source, payload, task_id"
            " FROM pubsub_messages ORDER BY seq"
        ):
            snapshot.messages.append(
                Message.model_construct(
                    message_id=message_id,
                    timestamp=datetime.fromisoformat(timestamp),
                    source=source,
                    channel=channel,
                    payload=json.loads(payload),
                    task_id=task_id,
                )
            )
        snapshot.deliveries = list(
            query("SELECT message_id, node_id, outcome FROM pubsub_deliveries ORDER BY rowid")
        )
        snapshot.dead_letters = list(
            query("SELECT message_id, channel, agent, reason FROM pubsub_dead_letters ORDER BY rowid")
        )
        snapshot.nodes = dict(query("SELECT node_id, agent FROM pubsub_nodes"))
        snapshot.channels = {
            name: None if schema is None else json.loads(schema)
            for name, schema in query("SELECT name, schema FROM pubsub_channels ORDER BY rowid")
        }
        return snapshot

    def add_message(self, message: Message, payload_json: str) -> None:
        """Queue a published message."""
        self.pending.messages.append(
            (
                message.message_id,
                message.timestamp.isoformat(),
                message.channel,
                message.source,
                payload_json,
                message.task_id,
            )
        )

    def add_delivery(self, message_id: str, node_id: str, outcome: str, at: float) -> None:
        """Queue the fact that ``node_id`` is done with ``message_id`` (``delivered`` or ``rejected``)."""
        self.pending.deliveries.append((message_id, node_id, outcome, at))

    def add_dead_letter(self, message_id: str, channel: str, agent: str, reason: str) -> None:
        """Queue a dead letter."""
        self.pending.dead_letters.append((message_id, channel, agent, reason))

    def add_node(self, node_id: str, agent: str) -> None:
        """Queue a registration."""
        self.pending.nodes.append((node_id, agent))

    def add_channel(self, name: str, schema: dict[str, Any] | None) -> None:
        """Queue a channel (or its new schema)."""
        self.pending.channels.append((name, None if schema is None else json.dumps(schema)))

    def take(self) -> Batch:
        """Hand the pending rows over to a writer (cheap: swaps a reference)."""
        batch, self.pending = self.pending, Batch()
        return batch

    def write(self, batch: Batch) -> None:
        """Write ``batch`` in one transaction (blocking: call it from a worker thread in a loop)."""
        if not batch or self.closed:
            return
        connection = self._connection
        try:
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO pubsub_channels (name, schema) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET schema = excluded.schema",
                batch.channels,
            )
            connection.executemany(
                "INSERT OR IGNORE INTO pubsub_nodes (node_id, agent) VALUES (?, ?)", batch.nodes
            )
            connection.executemany(
                "INSERT INTO pubsub_messages (message_id, timestamp, channel, source, payload, task_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                batch.messages,
            )
            connection.executemany(
                "INSERT INTO pubsub_deliveries (message_id, node_id, outcome, at) VALUES (?, ?, ?, ?)",
                batch.deliveries,
            )
            connection.executemany(
                "INSERT INTO pubsub_dead_letters (message_id, channel, agent, reason) VALUES (?, ?, ?, ?)",
                batch.dead_letters,
            )
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StorageError(f"cannot write the pub/sub log '{self.path}': {error}") from error

    def flush(self) -> None:
        """Write every pending row now, on the calling thread."""
        self.write(self.take())

    def close(self) -> None:
        """Flush, close the file and release the process lock; safe to call twice."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            self._connection.close()
            self._lock.release()
