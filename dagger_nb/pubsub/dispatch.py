"""The delivery engine: routes records into subscriber queues and runs one task per subscriber.

Every registration (node) owns a bounded anyio memory object stream and, while
delivery runs, exactly one long-lived task that takes records from it in
order and calls the agent's handler. Routing puts a record in the stream of
every subscriber of its channel; a full stream makes the publisher wait
(backpressure) instead of dropping anything. While one publisher of a channel
waits, the others line up behind it (a per-channel lock), so every subscriber
sees the channel in the same order.

Besides its stream a node has a ``backlog`` of records older than anything in
the stream: what its agent missed while it was not registered (replayed on
registration) and a record whose handler was interrupted by a stop. The
delivery task empties the backlog first, so order is kept.

Delivery tasks never block inside the stream's ``receive()``: they take with
``receive_nowait()`` and otherwise wait on the node's ``ready`` event, so a
cancelled task can never lose an item already handed to it.

``outstanding`` counts records owed to nodes and not yet settled (handled,
rejected, or abandoned with their node); zero means idle.
"""

from __future__ import annotations

from collections.abc import Callable
from time import time

import anyio
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream, WouldBlock

from dagger_nb.errors import SchemaValidationError
from dagger_nb.pubsub._state import Channel, Node, Record

_STREAM_ERRORS = (BrokenResourceError, ClosedResourceError)

#: ``outcome(node, record, kind, reason, at)`` with kind ``delivered``, ``failed`` or ``rejected``.
Outcome = Callable[[Node, Record, str, str, float], None]


class Dispatcher:
    """Channels, nodes and the records between them; knows nothing of schemas at publish or storage."""

    def __init__(self, outcome: Outcome) -> None:
        self.channels: dict[str, Channel] = {}
        self.nodes: dict[str, Node] = {}
        #: Agent name of every node id ever seen (restored ones too).
        self.names: dict[str, str] = {}
        self.records: list[Record] = []
        self.outstanding = 0
        #: Set by a stop: delivery tasks start no new handler.
        self.stopping = False
        self._outcome = outcome
        self._idle: anyio.Event | None = None

    # ----------------------------------------------------------------- nodes

    def attach(self, node: Node) -> None:
        """Subscribe ``node`` to its channels (which must exist) and queue what its agent is owed."""
        node.backlog.extend(self.owed(node))
        node.pending = len(node.backlog)
        self.outstanding += node.pending
        self.nodes[node.node_id] = node
        self.names[node.node_id] = node.name
        for name in node.agent.subscribe:
            self.channels[name].subscribers.append(node)

    def detach(self, node: Node) -> None:
        """Stop delivering to ``node``: close its queue, cancel its task, forget what it owed."""
        del self.nodes[node.node_id]
        node.removed = True
        for name in node.agent.subscribe:
            self.channels[name].subscribers.remove(node)
        self.outstanding -= node.pending
        node.pending = 0
        self._check_idle()
        node.send.close()
        node.receive.close()
        self._wake(node)
        if node.space is not None:
            node.space.set()
        if node.scope is not None:
            node.scope.cancel()

    def owed(self, node: Node) -> list[Record]:
        """Records on the node's channels that no node of its agent name has handled or rejected.

        The agent's own messages (from any node of that name) are never owed.
        """
        channels = set(node.agent.subscribe)
        names = self.names
        owed = []
        for record in self.records:
            message = record.message
            if message.channel not in channels or names.get(message.source) == node.name:
                continue
            done = record.delivered_to + record.rejected_by
            if not any(names.get(node_id) == node.name for node_id in done):
                owed.append(record)
        return owed

    # ----------------------------------------------------------------- routing

    async def route(self, channel: Channel, record: Record) -> None:
        """Queue ``record`` for every subscriber of ``channel`` but its source; wait while a queue is full."""
        source = record.message.source
        targets = [node for node in channel.subscribers if node.node_id != source]
        if not targets:
            return
        for node in targets:
            node.pending += 1
        self.outstanding += len(targets)
        if not channel.blocked:
            for index, node in enumerate(targets):
                try:
                    node.send.send_nowait(record)
                except WouldBlock:
                    await self._route_waiting(channel, record, targets[index:])
                    return
                except _STREAM_ERRORS:
                    continue
                if node.ready is not None:
                    self._wake(node)
            return
        await self._route_waiting(channel, record, targets)

    async def _route_waiting(self, channel: Channel, record: Record, targets: list[Node]) -> None:
        channel.blocked += 1
        sent = 0
        try:
            if channel.lock is None:
                channel.lock = anyio.Lock()
            async with channel.lock:
                for node in targets:
                    await self._send_waiting(node, record)
                    sent += 1
        except BaseException:
            for node in targets[sent:]:
                self.settle(node)
            raise
        finally:
            channel.blocked -= 1

    async def _send_waiting(self, node: Node, record: Record) -> None:
        while True:
            try:
                node.send.send_nowait(record)
            except WouldBlock:
                if node.space is None:
                    node.space = anyio.Event()
                await node.space.wait()
                continue
            except _STREAM_ERRORS:
                return
            self._wake(node)
            return

    # ----------------------------------------------------------------- delivery

    async def deliver(self, node: Node) -> None:
        """The node's delivery task: hand it records in order until stopped or detached."""
        with anyio.CancelScope() as scope:
            node.scope = scope
            node.active = True
            try:
                while not (self.stopping or node.removed):
                    record = self._take(node)
                    if record is None:
                        node.ready = anyio.Event()
                        await node.ready.wait()
                    else:
                        await self._handle(node, record)
            finally:
                node.active = False
                node.scope = None
                node.ready = None

    def _take(self, node: Node) -> Record | None:
        if node.backlog:
            return node.backlog.popleft()
        try:
            record = node.receive.receive_nowait()
        except (WouldBlock, EndOfStream, ClosedResourceError):
            return None
        if node.space is not None:
            node.space.set()
            node.space = None
        return record

    async def _handle(self, node: Node, record: Record) -> None:
        message = record.message
        agent = node.agent
        schema = agent.input_schema
        if schema is not None and not schema.is_valid(message.payload):
            try:
                schema.validate(message.payload)
            except SchemaValidationError as error:
                record.rejected_by.append(node.node_id)
                node.rejected += 1
                node.last_message_at = now = time()
                self._outcome(node, record, "rejected", str(error), now)
            self.settle(node)
            return
        reason = ""
        node.in_handler = True
        try:
            if agent.is_async:
                await agent.handler(message, node.context)
            else:
                # On stop() a blocking handler is abandoned in its thread; the message is redelivered.
                await anyio.to_thread.run_sync(agent.handler, message, node.context, abandon_on_cancel=True)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            node.failed += 1
        except BaseException:
            node.backlog.appendleft(record)
            raise
        finally:
            node.in_handler = False
        record.delivered_to.append(node.node_id)
        node.delivered += 1
        node.last_message_at = now = time()
        if reason:
            self._outcome(node, record, "failed", reason, now)
        self._outcome(node, record, "delivered", "", now)
        self.settle(node)

    def settle(self, node: Node) -> None:
        """One record owed to ``node`` is done with (handled, rejected or abandoned)."""
        if node.removed:
            return
        node.pending -= 1
        self.outstanding -= 1
        self._check_idle()

    # ----------------------------------------------------------------- idleness

    async def wait_idle(self) -> None:
        """Wait until no record is owed to any node (delivery must be running to get there)."""
        while self.outstanding > 0:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def _check_idle(self) -> None:
        if self.outstanding == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    @staticmethod
    def _wake(node: Node) -> None:
        if node.ready is not None:
            node.ready.set()
            node.ready = None
