"""The pub/sub bus: the public face over the :mod:`~dagger_nb.pubsub.dispatch` engine.

:class:`PubSub` checks what comes in (channel schemas, JSON payloads, strict
channels), records what happens (history, dead letters, events, the optional
SQLite log) and owns delivery's lifetime (``run``, ``start``, ``stop``,
``async with``); the dispatcher moves records between queues and handlers.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any

import anyio
from pydantic import ValidationError

from dagger_nb._loop import run_sync
from dagger_nb.cache import Cache
from dagger_nb.errors import (
    AgentNotFound,
    ChannelNotFound,
    ExecutionError,
    PubSubError,
)
from dagger_nb.events import EventStream
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
    DeliveryStarted,
    DeliveryStopped,
    HandlerFailed,
    MessageDelivered,
    MessagePublished,
    MessageRejected,
    PubSubEvent,
)
from dagger_nb.pubsub.handle import PubSubHandle
from dagger_nb.pubsub.message import Message, new_message_id, not_json_error, utc_now
from dagger_nb.schema import compile_schema

#: How many of its latest events a bus keeps for late subscribers and monitors (the file, or
#: ``history()``, holds the messages themselves): a bus emits about two per delivered message.
EVENT_WINDOW = 2000


class PubSub(BusViews):
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
        self._loop_thread: int | None = None
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
        node.context._loop_thread = self._loop_thread
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
        """:meth:`publish` from synchronous code (a script); see :func:`dagger_nb._loop.run_sync`.

        Not while delivery runs on an event loop: ``await publish(...)`` there.
        """
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

    async def _publish_as(
        self, ctx: PubSubContext, channel: str, payload: Any, task_id: str | None
    ) -> Message:
        schema = ctx.agent.output_schema
        if schema is not None:
            schema.validate(payload)
        return await self._publish(channel, payload, ctx.node_id, task_id)

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
        self.events.emit(MessagePublished(record.message))
        self._dispatch.send(record, targets)

    # ----------------------------------------------------------------- delivery

    async def run(self, *, until_idle: bool = False, timeout: float | None = None) -> None:
        """Deliver messages until :meth:`stop`, cancellation, ``timeout`` seconds, or idleness.

        With ``until_idle=True`` it returns once every queue is drained and no
        handler is running. When ``timeout`` passes first, delivery stops and
        ``run`` returns normally (check :meth:`is_idle`). Idle listeners never
        quit: without ``until_idle`` a message published an hour later is
        still delivered.
        """
        await self._run(until_idle=until_idle, timeout=timeout)

    def run_sync(self, *, until_idle: bool = False, timeout: float | None = None) -> None:
        """:meth:`run` from synchronous code: a script, or a thread other than a running loop's."""
        run_sync(self._run_keywords, until_idle, timeout)

    async def _run_keywords(self, until_idle: bool, timeout: float | None) -> None:
        await self._run(until_idle=until_idle, timeout=timeout)

    async def _run(
        self,
        *,
        until_idle: bool,
        timeout: float | None,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self._check_open()
        while self._running and self._dispatch.stopping:  # a stopped run still winding down
            if self._run_ended is None:
                self._run_ended = anyio.Event()
            await self._run_ended.wait()
        if self._running:
            raise ExecutionError("this PubSub is already delivering (one run() or start() at a time)")
        if self._stop_early:
            self._stop_early = False
            task_status.started()
            return
        self._running = True
        self._dispatch.stopping = False
        self._stop_reason = "cancelled"
        self._set_loop_thread(threading.get_ident())
        self.events.emit(DeliveryStarted())
        try:
            async with anyio.create_task_group() as group:
                self._task_group = group
                for node in list(self._nodes.values()):
                    group.start_soon(self._dispatch.deliver, node, name=f"pubsub:{node.node_id}")
                task_status.started()
                with anyio.move_on_after(timeout):
                    if until_idle:
                        await self.wait_idle()
                        self._stop_reason = "idle"
                    else:
                        await anyio.sleep_forever()
                if self._stop_reason == "cancelled":
                    self._stop_reason = "timeout"
                self._dispatch.stopping = True
                group.cancel_scope.cancel()
        except BaseExceptionGroup as errors:  # a storage failure in a delivery task: raise it as itself
            if len(errors.exceptions) == 1:
                raise errors.exceptions[0] from None
            raise
        finally:
            self._task_group = None
            self._running = False
            self._dispatch.stopping = False
            self._set_loop_thread(None)
            if self._run_ended is not None:
                self._run_ended.set()
                self._run_ended = None
            if not self.events.closed:
                self.events.emit(DeliveryStopped(self._stop_reason))
            if self._durable is not None:
                self._durable.flush()

    def start(self, *, timeout: float | None = None) -> PubSubHandle:
        """Deliver in the background on the running event loop (a notebook's) and return at once.

        The returned handle can be awaited, stopped and subscribed to. Raises
        :class:`~dagger_nb.errors.ExecutionError` without a running loop (use
        :meth:`run_sync` in scripts) or when delivery is already running.
        """
        self._check_open()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ExecutionError(
                "start() needs a running event loop (a notebook cell or async code); "
                "in a script use run_sync()"
            ) from None
        winding_down = self._running and self._dispatch.stopping
        if not winding_down and (self._running or (self._handle is not None and not self._handle.done)):
            raise ExecutionError("this PubSub is already delivering (one run() or start() at a time)")
        handle = PubSubHandle(self)
        handle._start(loop, self._run(until_idle=False, timeout=timeout))
        self._handle = handle
        return handle

    def stop(self) -> None:
        """End delivery now: no handler starts afterwards, and running async handlers are cancelled.

        Call it from the event loop's thread. The run (``await handle``,
        ``run()``) ends once every running handler has returned: a sync
        handler's thread cannot be cancelled, so its call is waited for (up to
        ``stop_timeout`` seconds, then a :class:`~dagger_nb.errors.DaggerWarning`
        names it) and counts as handled. A :meth:`start` right after waits for
        that end, so one message's handler never runs twice at once. Messages
        not yet handled stay queued for the next :meth:`run`. Does nothing when
        not delivering.
        """
        if not self._running:
            if self._handle is not None and not self._handle.done:
                self._stop_early = True
            return
        self._dispatch.stopping = True
        self._stop_reason = "stopped"
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def wait_idle(self) -> None:
        """Wait until every queue is drained and no handler is running (delivery must be on)."""
        await self._dispatch.wait_idle()

    def is_idle(self) -> bool:
        """True when no message is queued for any agent and no handler is running."""
        return self._dispatch.outstanding == 0

    @property
    def running(self) -> bool:
        """True while :meth:`run` or :meth:`start` is delivering."""
        return self._running

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
        if kind == "delivered":
            self.events.emit(MessageDelivered(message_id, channel, node_id, at))
        elif kind == "failed":
            self.events.emit(HandlerFailed(message_id, channel, node_id, reason, at, traceback, node.call_logs))
        else:
            self.events.emit(MessageRejected(message_id, channel, node_id, reason, at))

    def _set_loop_thread(self, thread: int | None) -> None:
        self._loop_thread = thread
        for node in self._nodes.values():
            node.context._loop_thread = thread

    # ----------------------------------------------------------------- lifetime

    async def __aenter__(self) -> PubSub:
        self._check_open()
        group = anyio.create_task_group()
        await group.__aenter__()
        self._context_group = group
        try:
            await group.start(self._serve)
        except BaseException as error:
            await group.__aexit__(type(error), error, error.__traceback__)
            raise
        return self

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._run(until_idle=False, timeout=None, task_status=task_status)

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool | None:
        """Without an error, deliver until idle; then stop, and close the bus."""
        group, self._context_group = self._context_group, None
        assert group is not None
        try:
            if exc_type is None and self._running and not self._dispatch.stopping:
                await self.wait_idle()
        finally:
            self.stop()
            try:
                await group.__aexit__(None, None, None)
            finally:
                self.close()
        return None

    def close(self) -> None:
        """Release the database (flushing it) and end event subscriptions; safe to call twice.

        Stop delivery first. History and frames stay readable afterwards.
        """
        if self._closed:
            return
        if self._running:
            raise ExecutionError("close() while delivering: call stop() and let the run end first")
        self._closed = True
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

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutionError("this PubSub is closed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._running else "stopped"
        return (
            f"<PubSub {state}: {len(self._channels)} channels, {len(self._nodes)} agents, "
            f"{sum(channel.messages for channel in self._channels.values())} messages>"
        )
