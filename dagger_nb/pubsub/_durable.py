"""What ``PubSub(db=...)`` adds to a bus: its SQLite log, the group commit over it, and replays.

A message is recorded in the log and routed only once its row is committed:
its publisher reserved places in its subscribers' queues, waits for the
commit (sharing it with whoever else waits), and the commit routes it. A
failed write frees those places and fails every ``publish`` whose message it
held. Outcomes (deliveries, rejections, dead letters) are committed before a
subscriber takes its next message, and a returning agent reads what it is
owed from the file a page at a time, so memory stays bounded however long
the log grows.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from dagger_nb.errors import DaggerError
from dagger_nb.pubsub import views
from dagger_nb.pubsub._commit import GroupCommit
from dagger_nb.pubsub._state import Channel, DeadLetter, Node, Record
from dagger_nb.pubsub.dispatch import Dispatcher
from dagger_nb.pubsub.message import Message
from dagger_nb.pubsub.store import Batch, MessageLog
from dagger_nb.schema import compile_schema

if TYPE_CHECKING:
    import pandas as pd

#: How many owed messages a returning agent reads from the log at a time.
REPLAY_PAGE = 256

#: ``route(record, targets)``: a committed message goes to the places reserved for it.
Route = Callable[[Record, list[Node]], None]


class Durability:
    """The log of one bus: opened (and checked) here, closed by :meth:`close`."""

    def __init__(
        self,
        db: str | os.PathLike[str],
        dispatch: Dispatcher,
        *,
        route: Route,
        on_takeover: Callable[[], None] | None = None,
    ) -> None:
        self.log = log = MessageLog(db, on_takeover=on_takeover)
        try:
            self._restore(dispatch)
        except BaseException:
            log.close()
            raise
        self._route = route
        self._dispatch = dispatch
        self.commit = GroupCommit(log, written=self._written, failed=self._failed)
        dispatch.persist = self.commit.commit
        dispatch.fetch = self._fetch

    def _restore(self, dispatch: Dispatcher) -> None:
        summary = self.log.open()
        channels = dispatch.channels
        for name, schema in summary.channels.items():
            try:
                compiled = compile_schema(schema, where=f"channel '{name}'")
            except DaggerError as error:
                raise self.log.damaged(f"pubsub_channels row '{name}'", error) from None
            channels[name] = Channel(name, compiled)
        for name, count in summary.counts.items():
            channels.setdefault(name, Channel(name)).messages = count
        dispatch.names.update(summary.nodes)

    @property
    def last_seq(self) -> int:
        """The seq of the last message published (committed or about to be)."""
        return self.log.last_seq

    async def publish(self, message: Message, payload_json: str, targets: list[Node]) -> None:
        """Record ``message`` and return once it is committed and routed to ``targets``."""
        record = Record(message)
        record.seq = self.log.add_message(message, payload_json, (record, targets))
        await self.commit.commit(message=True)

    def outcome(
        self, record: Record, node: Node, kind: str, reason: str, at: float, traceback: str | None = None
    ) -> None:
        """Queue the rows for what became of ``record`` at ``node`` (committed by the dispatcher).

        Nothing once the log is closed (the bus was taken over): the file's new owner
        delivers that message again.
        """
        if self.log.closed:
            return
        message = record.message
        if kind != "delivered":
            self.log.add_dead_letter(message.message_id, message.channel, node.node_id, reason, traceback,
                                     node.call_logs if kind == "failed" else None)
        if kind != "failed":
            self.log.add_delivery(message.message_id, node.node_id, kind, at)

    def add_node(self, node_id: str, agent: str) -> None:
        """Record a registration now (unless a write under way will take it)."""
        self.log.add_node(node_id, agent)
        self.commit.flush()

    def add_channel(self, name: str, schema: dict[str, object] | None) -> None:
        """Record a channel or its new schema now (unless a write under way will take it)."""
        self.log.add_channel(name, schema)
        self.commit.flush()

    def _written(self, batch: Batch) -> None:
        for record, targets in batch.routes:
            self._route(record, targets)

    def _failed(self, batch: Batch) -> None:
        for _, targets in batch.routes:
            self._dispatch.release(targets)
        # Registrations and channels are idempotent upserts: retry them with the next batch.
        self.log.pending.nodes[:0] = batch.nodes
        self.log.pending.channels[:0] = batch.channels

    async def _fetch(self, node: Node) -> list[Record]:
        await self.commit.commit()
        page = functools.partial(
            self.log.owed,
            node.name,
            node.agent.subscribe,
            after=node.replay_after,
            until=node.replay_until,
            limit=REPLAY_PAGE,
        )
        return await anyio.to_thread.run_sync(page)

    def history(self, channel: str | None) -> pd.DataFrame:
        """The committed history, read from the file."""
        return views.history_frame(self.log.history_records(channel), None)

    def dead_letters(self) -> list[DeadLetter]:
        """The committed dead letters, read from the file."""
        return [DeadLetter(*row) for row in self.log.dead_letter_rows()]

    def flush(self) -> None:
        """Write what is pending now (see :meth:`GroupCommit.flush`)."""
        if not self.log.closed:
            self.commit.flush()

    def close(self) -> None:
        """Write what is pending (settling its waiters), close the file and release its lock."""
        try:
            self.flush()
        finally:
            self.log.close()
