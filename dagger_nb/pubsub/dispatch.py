"""The delivery engine: routes records into subscriber queues and runs one task per subscriber.

Every registration (node) owns a bounded queue and, while delivery runs,
exactly one long-lived task that takes records from it in order and calls the
agent's handler. A publisher first reserves a place in the queue of every
subscriber of its channel, waiting while any is full (backpressure, never
loss); only then is its message recorded and routed to all of them at once,
so a publisher cancelled while it waits leaves no trace, and one that got its
places is delivered to every subscriber. While one publisher of a channel
waits, the others line up behind it (a per-channel lock), so every subscriber
sees the channel in the same order.

Besides its queue a node has a ``backlog`` of records older than anything in
the queue: what its agent missed while it was not registered (replayed on
registration; with ``db=`` read from the file a page at a time) and a record
whose handler was interrupted by a stop. The delivery task empties the
backlog first, so order is kept.

``outstanding`` counts records owed to nodes and not yet settled (handled,
rejected, or abandoned with their node), plus one per node still replaying
from the file; zero means idle.
"""

from __future__ import annotations

import threading
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from time import time

import anyio

from dagger_nb._capture import LazyLogBuffer, route_logs, unroute_logs
from dagger_nb._traceback import format_failure
from dagger_nb.errors import DaggerWarning, SchemaValidationError, describe_error
from dagger_nb.pubsub._state import LAST_LOGS, Channel, Node, Record

#: ``outcome(node, record, kind, reason, at, traceback)`` with kind ``delivered``, ``failed`` or
#: ``rejected``; ``traceback`` is the failed handler's trimmed stack (else None).
Outcome = Callable[[Node, Record, str, str, float, "str | None"], None]
#: ``fetch(node)``: the next page of records the log owes ``node`` (empty when it owes none).
Fetch = Callable[[Node], Awaitable[list[Record]]]


def _keep_logs(node: Node, lines: list[str] | None) -> None:
    """Keep what a handler call printed or logged: as the call's lines and among the node's latest."""
    if lines is None:
        node.call_logs = None
        return
    node.call_logs = lines = lines[-LAST_LOGS:]
    if node.last_logs is None:
        node.last_logs = deque(maxlen=LAST_LOGS)
    node.last_logs.extend(lines)


class Dispatcher:
    """Channels, nodes and the records between them; knows nothing of schemas at publish or storage.

    ``persist`` (with ``db=``) returns once every outcome recorded so far is
    committed; ``fetch`` pages owed records in from the log.
    """

    def __init__(self, outcome: Outcome, *, stop_timeout: float) -> None:
        self.channels: dict[str, Channel] = {}
        self.nodes: dict[str, Node] = {}
        #: Agent name of every node id ever seen (restored ones too).
        self.names: dict[str, str] = {}
        #: Every record, without ``db=`` (with it, the log is the history).
        self.records: list[Record] = []
        self.outstanding = 0
        #: Set by a stop: delivery tasks start no new handler.
        self.stopping = False
        self.stop_timeout = stop_timeout
        self.persist: Callable[[], Awaitable[None]] | None = None
        self.fetch: Fetch | None = None
        self._outcome = outcome
        self._idle: anyio.Event | None = None

    # ----------------------------------------------------------------- nodes

    def attach(self, node: Node, *, replay_until: int = 0) -> None:
        """Subscribe ``node`` to its channels (which must exist) and queue what its agent is owed.

        With ``replay_until`` (a log's last seq) the owed records are read
        from the log by the delivery task instead of scanned from memory.
        """
        if self.fetch is not None:
            node.replay_until = replay_until
            node.pending = 1 if node.replaying else 0
        else:
            node.backlog.extend(self.owed(node))
            node.pending = len(node.backlog)
        self.outstanding += node.pending
        self.nodes[node.node_id] = node
        self.names[node.node_id] = node.name
        for name in node.agent.subscribe:
            self.channels[name].subscribers.append(node)

    def detach(self, node: Node) -> None:
        """Stop delivering to ``node``: cancel its task, forget what it owed."""
        del self.nodes[node.node_id]
        node.removed = True
        for name in node.agent.subscribe:
            self.channels[name].subscribers.remove(node)
        self.outstanding -= node.pending
        node.pending = 0
        node.queue.clear()
        self._check_idle()
        self._wake(node)
        self._room(node)
        if node.scope is not None:
            node.scope.cancel()

    def owed(self, node: Node) -> list[Record]:
        """In memory: records on the node's channels that no node of its agent name has handled or rejected.

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

    async def reserve(self, channel: Channel, source: str) -> list[Node]:
        """Reserve a place for one record in every subscriber's queue but ``source``'s; wait while one is full.

        Nothing is reserved until every queue has room, so a cancelled wait
        leaves nothing behind. Follow with :meth:`send` or :meth:`release`.
        """
        if not channel.blocked:
            targets = self._try_reserve(channel, source)
            if targets is not None:
                return targets
        channel.blocked += 1
        try:
            if channel.lock is None:
                channel.lock = anyio.Lock()
            async with channel.lock:
                while (targets := self._try_reserve(channel, source)) is None:
                    full = next(node for node in channel.subscribers if node.full and node.node_id != source)
                    if full.space is None:
                        full.space = anyio.Event()
                    await full.space.wait()
                return targets
        finally:
            channel.blocked -= 1

    def _try_reserve(self, channel: Channel, source: str) -> list[Node] | None:
        targets = [node for node in channel.subscribers if node.node_id != source]
        for node in targets:
            if node.full:
                return None
        for node in targets:
            node.reserved += 1
            node.pending += 1
        self.outstanding += len(targets)
        return targets

    def send(self, record: Record, targets: list[Node]) -> None:
        """Put ``record`` in the queues reserved for it."""
        for node in targets:
            node.reserved -= 1
            if not node.removed:
                node.queue.append(record)
                if node.ready is not None:
                    self._wake(node)

    def release(self, targets: list[Node]) -> None:
        """Give back the places reserved for a record that will not be routed (its write failed)."""
        for node in targets:
            node.reserved -= 1
            self.settle(node)
            self._room(node)

    # ----------------------------------------------------------------- delivery

    async def deliver(self, node: Node) -> None:
        """The node's delivery task: hand it records in order until stopped or detached."""
        with anyio.CancelScope() as scope:
            node.scope = scope
            node.active = True
            try:
                while not (self.stopping or node.removed):
                    record = self._take(node)
                    if record is not None:
                        await self._handle(node, record)
                    elif node.replaying and self.fetch is not None:
                        await self._replay(node, self.fetch)
                    else:
                        node.ready = anyio.Event()
                        await node.ready.wait()
            finally:
                node.active = False
                node.scope = None
                node.ready = None

    async def _replay(self, node: Node, fetch: Fetch) -> None:
        page = await fetch(node)
        if node.removed:
            return
        if page:
            node.replay_after = page[-1].seq
            node.backlog.extend(page)
            node.pending += len(page)
            self.outstanding += len(page)
        else:
            node.replay_after = node.replay_until
        if not node.replaying:
            self.settle(node)  # the replay itself was one thing owed

    def _take(self, node: Node) -> Record | None:
        if node.backlog:
            return node.backlog.popleft()
        if not node.queue:
            return None
        record = node.queue.popleft()
        self._room(node)
        return record

    async def _handle(self, node: Node, record: Record) -> None:
        message = record.message
        agent = node.agent
        schema = agent.input_schema
        if schema is not None and not schema.is_valid(message.payload):
            try:
                schema.validate(message.payload)
            except SchemaValidationError as error:
                await self._settled(node, record, "rejected", str(error))
            return
        reason = ""
        stack: str | None = None
        interrupted: BaseException | None = None
        node.in_handler = True
        # Prints and log records of the call (a sync handler's thread gets a copy of this context)
        # go to the node's latest lines as well as to the cell; nothing is made until it writes.
        logs = LazyLogBuffer()
        routing = route_logs(logs)
        try:
            if agent.is_async:
                await agent.handler(message, node.context)
            else:
                interrupted = await self._call_in_thread(node, record)
        except Exception as error:
            reason = describe_error(error)
            stack = format_failure(error)
        except BaseException:
            node.backlog.appendleft(record)
            raise
        finally:
            unroute_logs(routing)
            node.in_handler = False
            lines = logs.take()
            if lines is not None or node.call_logs is not None:
                _keep_logs(node, lines)
        if interrupted is None:
            await self._settled(node, record, "delivered", reason, stack)
            return
        with anyio.CancelScope(shield=True):
            await self._settled(node, record, "delivered", reason, stack)
        raise interrupted

    async def _call_in_thread(self, node: Node, record: Record) -> BaseException | None:
        """Run a sync handler in a worker thread; on cancellation, wait for that thread to return.

        Returns the cancellation to re-raise once the outcome is recorded (the
        handler did run to its end), or raises the handler's own error.
        """
        ended = threading.Event()
        raised: list[Exception] = []

        def call() -> None:
            try:
                node.agent.handler(record.message, node.context)
            except Exception as error:
                raised.append(error)
            finally:
                ended.set()

        try:
            await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class() as cancelled:
            with anyio.CancelScope(shield=True):
                returned = await anyio.to_thread.run_sync(ended.wait, self.stop_timeout)
            if not returned:
                warnings.warn(
                    f"pub/sub agent '{node.name}' (node {node.node_id}): its sync handler was still running "
                    f"message {record.message.message_id} {self.stop_timeout} s after delivery stopped; "
                    "the message is delivered again and may overlap that call",
                    DaggerWarning,
                    stacklevel=1,
                )
                raise
            if raised:
                raise raised[0] from None  # the outcome is recorded; the stop is re-raised by the caller
            return cancelled
        if raised:
            raise raised[0]
        return None

    async def _settled(self, node: Node, record: Record, kind: str, reason: str, stack: str | None = None) -> None:
        """Record what became of ``record`` at ``node``, make it durable, then let the next one in."""
        if kind == "rejected":
            record.rejected_by.append(node.node_id)
            node.rejected += 1
        else:
            record.delivered_to.append(node.node_id)
            node.delivered += 1
            if reason:
                node.failed += 1
        node.last_message_at = now = time()
        if kind == "rejected":
            self._outcome(node, record, kind, reason, now, None)
        else:
            if reason:
                self._outcome(node, record, "failed", reason, now, stack)
            self._outcome(node, record, kind, "", now, None)
        if self.persist is not None:
            try:
                await self.persist()
            except anyio.get_cancelled_exc_class():
                self.settle(node)  # the outcome was written before the cancellation left persist()
                raise
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

    @staticmethod
    def _room(node: Node) -> None:
        if node.space is not None:
            node.space.set()
            node.space = None
