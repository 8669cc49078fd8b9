"""The SQLite log of a bus with ``db=``: messages, deliveries, dead letters, agents, channels.

The file is the bus's memory: a message is acknowledged to its publisher only
once its row is committed (see :mod:`~dagger_nb.pubsub._commit`), a
subscriber's progress is a ``pubsub_deliveries`` row committed before it
takes its next message, and ``history_frame()``, ``dead_letters_frame()`` and the
messages owed to a returning agent are read back from the file (a page at a
time) instead of being kept in memory. Opening a log reads only the channels,
the registrations and per-channel counts, so it costs the same for ten
messages or a million.

Every read of a damaged or foreign file raises
:class:`~dagger_nb.errors.StorageError` naming the file and, where known, the row.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dagger_nb._traceback import printable
from dagger_nb.errors import StorageError
from dagger_nb.pubsub._state import Node, Record
from dagger_nb.pubsub.message import Message
from dagger_nb.storage import ProcessLock, add_missing_columns, open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS pubsub_messages (
    seq INTEGER PRIMARY KEY,
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
    reason TEXT NOT NULL,
    traceback TEXT,
    logs TEXT
);
CREATE TABLE IF NOT EXISTS pubsub_nodes (
    node_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pubsub_channels (
    name TEXT PRIMARY KEY,
    schema TEXT
);
CREATE INDEX IF NOT EXISTS pubsub_deliveries_by_message ON pubsub_deliveries (message_id);
CREATE INDEX IF NOT EXISTS pubsub_nodes_by_agent ON pubsub_nodes (agent);
"""

COLUMNS = {
    "pubsub_messages": ("seq", "message_id", "timestamp", "channel", "source", "payload", "task_id"),
    "pubsub_deliveries": ("message_id", "node_id", "outcome", "at"),
    "pubsub_dead_letters": ("message_id", "channel", "agent", "reason"),
    "pubsub_nodes": ("node_id", "agent"),
    "pubsub_channels": ("name", "schema"),
}
#: Pages the write-ahead log may hold before SQLite copies it into the file (SQLite's default: 1000).
WAL_CHECKPOINT_PAGES = 10_000
_MESSAGE_COLUMNS = "seq, message_id, timestamp, channel, source, payload, task_id"
_UPSERT_CHANNEL = (
    "INSERT INTO pubsub_channels (name, schema) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET schema = excluded.schema"
)
_INSERT_NODE = "INSERT OR IGNORE INTO pubsub_nodes (node_id, agent) VALUES (?, ?)"
_INSERT_MESSAGE = f"INSERT INTO pubsub_messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_DELIVERY = "INSERT INTO pubsub_deliveries (message_id, node_id, outcome, at) VALUES (?, ?, ?, ?)"
_INSERT_DEAD_LETTER = (
    "INSERT INTO pubsub_dead_letters (message_id, channel, agent, reason, traceback, logs) VALUES (?, ?, ?, ?, ?, ?)"
)
#: Columns added since the first version (name: SQL type): an older file gets them when opened.
_ADDED_COLUMNS = {"pubsub_dead_letters": {"traceback": "TEXT", "logs": "TEXT"}}


def _log_lines(text: Any) -> list[str] | None:
    """A dead letter's stored log lines (a JSON list), or None (none kept, or unreadable)."""
    if not isinstance(text, str):
        return None
    try:
        lines = json.loads(text)
    except ValueError:
        return None
    return [str(line) for line in lines] if isinstance(lines, list) else None


@dataclass(slots=True)
class Summary:
    """What a bus needs from its log when it opens: small, whatever the log's length."""

    channels: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """Rows waiting to be written, and the records to route once their rows are committed."""

    messages: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    nodes: list[tuple[Any, ...]] = field(default_factory=list)
    channels: list[tuple[Any, ...]] = field(default_factory=list)
    #: ``(record, nodes it is routed to)`` for each message row, in the same order.
    routes: list[tuple[Record, list[Node]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.messages or self.deliveries or self.dead_letters or self.nodes or self.channels)

    def without_messages(self) -> Batch:
        """The same rows but the messages (to store outcomes when the messages cannot be)."""
        return Batch(
            deliveries=self.deliveries, dead_letters=self.dead_letters, nodes=self.nodes, channels=self.channels
        )


class MessageLog:
    """An append-only SQLite log owned by one bus (and one live process) at a time."""

    def __init__(self, path: str | os.PathLike[str], *, on_takeover: Callable[[], None] | None = None) -> None:
        self.path = str(path)
        # Before touching the file: another live process may own it.
        self._lock = ProcessLock(path, owner="PubSub", on_takeover=on_takeover)
        self._reads = threading.Lock()
        self._writes = threading.RLock()  # close() on the loop thread waits for a write under way
        try:
            self._connection = open_database(path, schema=SCHEMA)
            # Every message and every handled delivery is a commit: checkpoint (and fsync) the
            # write-ahead log every few thousand of them rather than every few hundred.
            self._connection.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._reader = open_database(path)
        except BaseException:
            self._lock.release()
            raise
        self.pending = Batch()
        self.closed = False
        self.last_seq = 0

    # ----------------------------------------------------------------- reading

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._reads:
            # Once closed (the lock released), frames stay readable through a short-lived connection.
            reader = sqlite3.connect(self.path) if self.closed else self._reader
            try:
                yield reader
            except sqlite3.Error as error:
                raise StorageError(f"cannot read the pub/sub log '{self.path}': {error}") from None
            finally:
                if reader is not self._reader:
                    reader.close()

    def damaged(self, what: str, problem: object) -> StorageError:
        """The error for a row of this file that cannot be read back."""
        return StorageError(f"the pub/sub log '{self.path}' is damaged: {what}: {problem}")

    def open(self) -> Summary:
        """Check the file is a pub/sub log and read what the bus keeps in memory."""
        summary = Summary()
        with self._reading() as reader:
            for table, expected in COLUMNS.items():
                present = {row[1] for row in reader.execute(f"PRAGMA table_info({table})")}
                missing = [name for name in expected if name not in present]
                if missing:
                    raise StorageError(
                        f"'{self.path}' is not a dagger-nb pub/sub log: table {table} has no column "
                        f"{', '.join(missing)}"
                    )
            for name, schema in reader.execute("SELECT name, schema FROM pubsub_channels ORDER BY rowid"):
                summary.channels[name] = self._schema(name, schema)
            summary.nodes = dict(reader.execute("SELECT node_id, agent FROM pubsub_nodes"))
            summary.counts = dict(
                reader.execute("SELECT channel, count(*) FROM pubsub_messages GROUP BY channel")
            )
            (last,) = reader.execute("SELECT coalesce(max(seq), 0) FROM pubsub_messages").fetchone()
        with self._writes:
            try:
                for table, columns in _ADDED_COLUMNS.items():
                    add_missing_columns(self._connection, table, columns)
            except sqlite3.Error as error:
                raise StorageError(f"cannot upgrade the pub/sub log '{self.path}': {error}") from None
        if not isinstance(last, int):
            raise self.damaged("pubsub_messages", f"seq {last!r} is not an integer")
        self.last_seq = last
        return summary

    def _schema(self, channel: str, text: Any) -> dict[str, Any] | None:
        if text is None:
            return None
        try:
            schema = json.loads(text)
        except (TypeError, ValueError) as error:
            raise self.damaged(f"pubsub_channels row '{channel}'", f"schema is not JSON ({error})") from None
        if not isinstance(schema, dict):
            raise self.damaged(f"pubsub_channels row '{channel}'", "schema is not a JSON object")
        return schema

    def _message(self, row: tuple[Any, ...]) -> Record:
        seq, message_id, timestamp, channel, source, payload, task_id = row
        where = f"pubsub_messages row {seq}"
        try:
            when = datetime.fromisoformat(timestamp)
        except (TypeError, ValueError):
            raise self.damaged(where, f"timestamp {timestamp!r} is not an ISO date") from None
        try:
            value = json.loads(payload)
        except (TypeError, ValueError) as error:
            raise self.damaged(where, f"payload is not JSON ({error})") from None
        for name, text in (("message_id", message_id), ("channel", channel), ("source", source)):
            if not isinstance(text, str):
                raise self.damaged(where, f"{name} {text!r} is not text")
        message = Message.model_construct(
            message_id=message_id, timestamp=when, source=source, channel=channel, payload=value, task_id=task_id
        )
        return Record(message, seq=seq)

    def owed(self, agent: str, channels: tuple[str, ...], *, after: int, until: int, limit: int) -> list[Record]:
        """Up to ``limit`` messages after seq ``after`` (up to ``until``) on ``channels`` owed to ``agent``.

        Owed: neither sent by a node of that agent nor handled or rejected by one.
        """
        marks = ", ".join("?" * len(channels))
        query = (
            f"SELECT {_MESSAGE_COLUMNS} FROM pubsub_messages AS m"
            f" WHERE seq > ? AND seq <= ? AND channel IN ({marks})"
            " AND source NOT IN (SELECT node_id FROM pubsub_nodes WHERE agent = ?)"
            " AND NOT EXISTS (SELECT 1 FROM pubsub_deliveries AS d JOIN pubsub_nodes AS n USING (node_id)"
            "  WHERE d.message_id = m.message_id AND n.agent = ?)"
            " ORDER BY seq LIMIT ?"
        )
        with self._reading() as reader:
            rows = reader.execute(query, (after, until, *channels, agent, agent, limit)).fetchall()
        return [self._message(row) for row in rows]

    def history_records(self, channel: str | None) -> list[Record]:
        """Every committed message (or ``channel``'s) in publish order, with the nodes that handled it."""
        query = (
            f"SELECT {_MESSAGE_COLUMNS}, (SELECT json_group_array(node_id) FROM (SELECT node_id"
            " FROM pubsub_deliveries AS d WHERE d.message_id = m.message_id AND outcome = 'delivered'"
            " ORDER BY rowid)) FROM pubsub_messages AS m"
        )
        parameters: tuple[str, ...] = ()
        if channel is not None:
            query, parameters = query + " WHERE channel = ?", (channel,)
        records = []
        with self._reading() as reader:
            for row in reader.execute(query + " ORDER BY seq", parameters):
                record = self._message(row[:7])
                record.delivered_to = json.loads(row[7])
                records.append(record)
        return records

    def dead_letter_rows(self) -> list[tuple[str, str, str, str, str | None, list[str] | None]]:
        """``(message_id, channel, agent, reason, traceback, logs)`` of every committed dead letter, oldest
        first (``logs``: the lines the failed call printed or logged, None when it wrote nothing)."""
        with self._reading() as reader:
            rows = list(reader.execute(
                "SELECT message_id, channel, agent, reason, traceback, logs FROM pubsub_dead_letters ORDER BY rowid"
            ))
        return [(*row[:5], _log_lines(row[5])) for row in rows]

    # ----------------------------------------------------------------- writing

    def add_message(self, message: Message, payload_json: str, route: tuple[Record, list[Node]]) -> int:
        """Queue a published message and what to do once it is stored; return its seq."""
        self.last_seq += 1
        self.pending.messages.append(
            (
                self.last_seq,
                message.message_id,
                message.timestamp.isoformat(),
                message.channel,
                message.source,
                payload_json,
                message.task_id,
            )
        )
        self.pending.routes.append(route)
        return self.last_seq

    def add_delivery(self, message_id: str, node_id: str, outcome: str, at: float) -> None:
        """Queue the fact that ``node_id`` is done with ``message_id`` (``delivered`` or ``rejected``)."""
        self.pending.deliveries.append((message_id, node_id, outcome, at))

    def add_dead_letter(
        self, message_id: str, channel: str, agent: str, reason: str, traceback: str | None = None,
        logs: list[str] | None = None,
    ) -> None:
        """Queue a dead letter (its texts escaped where UTF-8 cannot hold them)."""
        stack = None if traceback is None else printable(traceback)
        lines = None if not logs else json.dumps(logs)  # LogBuffer.add_line escaped every line
        self.pending.dead_letters.append((message_id, channel, agent, printable(reason), stack, lines))

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
        """Write ``batch`` in one transaction (blocking; a small batch of a WAL file commits in microseconds)."""
        with self._writes:
            self._write(batch)

    def _write(self, batch: Batch) -> None:
        if self.closed:  # even an empty batch: its ticket's rows may have been lost with the close
            raise StorageError(f"cannot write the pub/sub log '{self.path}': it is closed")
        if not batch:
            return
        connection = self._connection
        try:
            connection.execute("BEGIN")
            for statement, rows in (
                (_UPSERT_CHANNEL, batch.channels),
                (_INSERT_NODE, batch.nodes),
                (_INSERT_MESSAGE, batch.messages),
                (_INSERT_DELIVERY, batch.deliveries),
                (_INSERT_DEAD_LETTER, batch.dead_letters),
            ):
                if rows:
                    connection.executemany(statement, rows)
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StorageError(f"cannot write the pub/sub log '{self.path}': {error}") from error

    def close(self) -> None:
        """Write what is pending, close the file and release the process lock; safe to call twice."""
        with self._writes:
            if self.closed:
                return
            try:
                self.write(self.take())
            finally:
                self.closed = True
                self._connection.close()
                self._reader.close()
                self._lock.release()
