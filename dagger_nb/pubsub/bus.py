"""The pub/sub bus: the public face over the :mod:`~dagger_nb.pubsub.dispatch` engine.

:class:`PubSub` checks what comes in (channel schemas, JSON payloads, strict
channels), records what happens (history, dead letters, events, the optional
SQLite log) and closes; delivery's lifetime (``run``, ``start``, ``stop``,
``async with``) is :mod:`~dagger_nb.pubsub._delivery`'s, and the dispatcher
moves records between queues and handlers.
"""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
from pydantic import ValidationError

from dagger_nb._loop import BackgroundGroup, LoopHop, run_sync
from dagger_nb.cache import Cache
from dagger_nb.errors import (
    AgentNotFound,
    ChannelNotFound,
    ExecutionError,
    PubSubError,
)
from dagger_nb.events import EventStream
from dagger_nb.pubsub._delivery import BusDelivery
from dagger_nb.pubsub._durable import Durability
from dagger_nb.pubsub._state import Channel, DeadLetter, Node, Record
from dagger_nb.pubsub._views import BusViews
from dagger_nb.pubsub.agent import (
    PubSubAgent,
    PubSubAgentRegistry,
    PubSubContext,
    default_pubsub_registry,
)
from dagger_nb.pubsub.dispatch import Dispatcher
from dagger_nb.pubsub.events import (
    AgentRegistered,
    AgentUnregistered,
    ChannelCreated,
    HandlerFailed,
    MessageDelivered,
    MessagePublished,
    MessageRejected,
    PubSubEvent,
)
from dagger_nb.pubsub.handle import PubSubHandle
from dagger_nb.pubsub.message import Message, new_message_id, not_json_error, utc_now
from dagger_nb.pubsub.report import Tally
from dagger_nb.schema import compile_schema

#: How many of its latest events a bus keeps for late subscribers and monitors (the file, or
#: ``history_frame()``, holds the messages themselves): a bus emits about two per delivered message.
EVENT_WINDOW = 2000


class PubSub(BusDelivery, BusViews):
    """Channels, the agents registered on them, and the delivery between them.

    ``db`` (a SQLite path) makes every message and delivery durable:
    ``publish`` returns once its message is committed, and a subscriber's
    progress is committed before it takes its next message;
    ``queue_size`` bounds each subscriber's queue; ``strict=True`` refuses
    channels that were not created with :meth:`create_channel`; ``registry``
    is where :meth:`register` looks agent names up (default
    :data:`~dagger_nb.pubsub.agent.default_pubsub_registry`); ``cache`` is
    shared with every handler as ``ctx.cache``; ``stop_timeout`` is how many
    seconds a stop waits for a sync handler's thread to return before it
    gives up with a :class:`~dagger_nb.errors.DaggerWarning`.
    """

    def __init__(
        self,
        *,
        db: str | os.PathLike[str] | None = None,
        queue_size: int = 1000,
        strict: bool = False,
        registry: PubSubAgentRegistry | None = None,
        cache: Cache | None = None,
        stop_timeout: float = 30.0,
    ) -> None:
        if not isinstance(queue_size, int) or queue_size < 1:
            raise PubSubError(f"queue_size must be a positive integer, got {queue_size!r}")
        self.queue_size = queue_size
        self.strict = strict
        self.registry = default_pubsub_registry if registry is None else registry
        self.cache = Cache() if cache is None else cache
        #: The latest :data:`EVENT_WINDOW` events; see :meth:`subscribe_events`.
        self.events: EventStream[PubSubEvent] = EventStream(limit=EVENT_WINDOW)
        self._dispatch = Dispatcher(self._on_outcome, stop_timeout=stop_timeout)
        self._channels = self._dispatch.channels
        self._nodes = self._dispatch.nodes
        self._records = self._dispatch.records
        self._dead: list[DeadLetter] = []
        self._task_group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._stop_reason = ""
        #: Carries a sync handler's ``ctx.publish_sync`` to the loop while delivery runs.
        self._hop = LoopHop()
        #: Owns the delivery :meth:`start` runs in the background.
        self._background = BackgroundGroup("PubSub.start()")
        self._tally = Tally()
        self._run_ended: anyio.Event | None = None
        self._handle: PubSubHandle | None = None
        self._stop_early = False
        self._context_group: anyio.abc.TaskGroup | None = None
        self._closed = False
        self._durable: Durability | None = None
        if db is not None:
            self._durable = Durability(db, self._dispatch, route=self._route, on_takeover=self._taken_over)

    # ----------------------------------------------------------------- channels

    def create_channel(self, name: str, *, schema: dict[str, Any] | str | None = None) -> None:
        """Create channel ``name``, or give an existing one a new ``schema``.

        Every payload published on it is checked against ``schema``; an invalid
        schema raises :class:`~dagger_nb.errors.InvalidSchemaError`.
        """
        self._check_open()
        if not isinstance(name, str) or not name:
            raise PubSubError(f"a channel needs a non-empty name, got {name!r}")
        compiled = compile_schema(schema, where=f"channel '{name}'")
        channel = self._channels.get(name)
        if channel is None:
            self._channels[name] = Channel(name, compiled)
            self.events.emit(ChannelCreated(name, compiled is not None))
        else:
            channel.schema = compiled
        if self._durable is not None:
            self._durable.add_channel(name, None if compiled is None else compiled.schema)

    def _channel(self, name: str) -> Channel:
        channel = self._channels.get(name)
        if channel is not None:
            return channel
        if self.strict:
            raise ChannelNotFound(name, self._channels)
        self.create_channel(name)
        return self._channels[name]

    # ----------------------------------------------------------------- agents

    def register(self, agent: PubSubAgent | str) -> str:
        """Register ``agent`` (a definition, or its name in :attr:`registry`); return its node id.

        The node id is the agent's name; registering the same agent again adds
        another subscriber, ``"<name>_2"``, ``"<name>_3"``... (ids are never reused
        within a bus). The new node first receives every
        message on its channels that no registration of the same agent name
        has handled yet (not counting the agent's own messages): messages
        published before anyone listened, or while it was away.
        """
        self._check_open()
        if isinstance(agent, str):
            agent = self.registry.get(agent)
        elif not isinstance(agent, PubSubAgent):
            raise PubSubError(f"register() takes a PubSubAgent or an agent name, got {type(agent).__name__}")
        for name in (*agent.subscribe, *agent.publish):
            self._channel(name)
        node_id, number = agent.name, 1
        while node_id in self._dispatch.names:
            number += 1
            node_id = f"{agent.name}_{number}"
        if self._durable is not None:
            self._durable.add_node(node_id, agent.name)
        node = Node(node_id, agent, PubSubContext(self, agent, node_id), capacity=self.queue_size)
        self._dispatch.attach(node, replay_until=self._durable.last_seq if self._durable is not None else 0)
        self.events.emit(AgentRegistered(node_id, agent.name, agent.subscribe, agent.publish))
        if self._task_group is not None and not self._dispatch.stopping:
            self._task_group.start_soon(self._dispatch.deliver, node, name=f"pubsub:{node_id}")
        return node_id

    def unregister(self, node_id: str) -> None:
        """Stop delivering to ``node_id`` (a running handler is cancelled).

        What it had not handled yet stays owed to its agent name and is
        delivered when that agent registers again.
        """
        self._check_open()
        node = self._nodes.get(node_id)
        if node is None:
            raise AgentNotFound(node_id, self._nodes)
        self._dispatch.detach(node)
        self.events.emit(AgentUnregistered(node_id, node.name))

    # ----------------------------------------------------------------- publishing

    async def publish(
        self, channel: str, payload: Any, *, source: str = "user", task_id: str | None = None
    ) -> Message:
        """Publish ``payload`` (any JSON value) on ``channel`` and return the message.

        The channel is created on first use unless the bus is strict
        (:class:`~dagger_nb.errors.ChannelNotFound`). A channel schema is
        checked here: an invalid payload raises
        :class:`~dagger_nb.errors.SchemaValidationError` and nothing is
        delivered. Waits while a subscriber's queue is full; cancelled there,
        the message is neither recorded nor delivered. With ``db=`` it returns
        once the message is committed, and a failed write raises
        :class:`~dagger_nb.errors.StorageError` (the message is then neither
        stored nor delivered).
        """
        return await self._publish(channel, payload, source, task_id)

    def publish_sync(
        self, channel: str, payload: Any, *, source: str = "user", task_id: str | None = None
    ) -> Message:
        """:meth:`publish` from synchronous code: a script (see :func:`dagger_nb._loop.run_sync`), or a
        worker thread while delivery runs (the call is carried to the loop's thread).

        Not on the loop's own thread while delivery runs: ``await publish(...)`` there.
        """
        if self._hop.off_loop:
            return self._hop.call_async(self._publish, channel, payload, source, task_id)
        if self._running:
            raise ExecutionError(
                "publish_sync() while delivery runs on an event loop; use 'await bus.publish(...)' there"
            )
        # Nothing delivers while a script is blocked here: waiting for queue space would never end.
        existing = self._channels.get(channel)
        for node in existing.subscribers if existing is not None else ():
            if node.node_id != source and node.full:
                raise PubSubError(
                    f"the queue of '{node.node_id}' is full (queue_size={node.capacity}) and nothing "
                    "is delivering; call run_sync() first or raise queue_size"
                )
        return run_sync(self._publish, channel, payload, source, task_id)

    async def _publish(self, name: str, payload: Any, source: str, task_id: str | None) -> Message:
        self._check_open()
        channel = self._channels.get(name) or self._channel(name)
        if channel.schema is not None:
            channel.schema.validate(payload)
        try:
            message = Message(
                message_id=new_message_id(),
                timestamp=utc_now(),
                source=source,
                channel=name,
                payload=payload,
                task_id=task_id,
            )
        except ValidationError as error:
            raise not_json_error(error, name) from None
        durable = self._durable
        payload_json = json.dumps(payload) if durable is not None else ""
        targets = await self._dispatch.reserve(channel, source)
        if durable is not None:
            await durable.publish(message, payload_json, targets)
            return message
        record = Record(message)
        self._records.append(record)
        self._route(record, targets)
        return message

    def _route(self, record: Record, targets: list[Node]) -> None:
        self._channels[record.message.channel].messages += 1
        self._tally.publish(record.message.channel)
        self.events.emit(MessagePublished(record.message))
        self._dispatch.send(record, targets)

    # ----------------------------------------------------------------- outcomes

    def _on_outcome(
        self, node: Node, record: Record, kind: str, reason: str, at: float, traceback: str | None
    ) -> None:
        """The dispatcher is done with ``record`` for ``node``: log it, dead-letter it, tell dashboards."""
        message_id, channel, node_id = record.message.message_id, record.message.channel, node.node_id
        if self._durable is not None:
            self._durable.outcome(record, node, kind, reason, at, traceback)
        elif kind != "delivered":
            logs = node.call_logs if kind == "failed" else None  # a rejected message reached no handler
            self._dead.append(DeadLetter(message_id, channel, node_id, reason, traceback, logs))
        self._tally.outcome(kind)
        if kind == "delivered":
            self.events.emit(MessageDelivered(message_id, channel, node_id, at))
        elif kind == "failed":
            self.events.emit(HandlerFailed(message_id, channel, node_id, reason, at, traceback, node.call_logs))
        else:
            self.events.emit(MessageRejected(message_id, channel, node_id, reason, at))

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Release the database (flushing it) and end event subscriptions; safe to call twice.

        Stop delivery first. History and frames stay readable afterwards.
        """
        if self._closed:
            return
        if self._running:
            raise ExecutionError("close() while delivering: call stop() and let the run end first")
        self._closed = True
        self._background.close()
        if self._handle is not None and not self._handle.done:  # started, but delivery never began
            self._handle._dropped()
        try:
            if self._durable is not None:
                self._durable.close()  # a StorageError here still releases the file
        finally:
            self.events.close()

    def _taken_over(self) -> None:
        """A newer PubSub of this process opened our file (a re-run cell): stop delivering, write
        what is pending and close, so nothing of ours reaches the file after the newer one read it."""
        if self._closed:
            return
        self.stop()  # running handlers are cancelled as soon as the loop runs again
        self._closed = True
        if self._durable is not None:
            try:
                self._durable.flush()  # settles the waiting publishers' tickets, unless a write is under way
            finally:
                self._durable.close()
                # A sync handler's thread may still return here: its outcome is not ours to write
                # (the newer bus delivers that message again), so delivery ends without the file.
                self._dispatch.persist = None
                self._dispatch.fetch = None
        # self.events stays open: a publish already past its checks still emits once it is stored

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._running else "stopped"
        return (
            f"<PubSub {state}: {len(self._channels)} channels, {len(self._nodes)} agents, "
            f"{sum(channel.messages for channel in self._channels.values())} messages>"
        )
