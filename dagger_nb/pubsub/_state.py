"""Runtime state of a bus: published records, channels and subscriber nodes."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import anyio

from dagger_nb.pubsub.agent import PubSubAgent, PubSubContext
from dagger_nb.pubsub.message import Message
from dagger_nb.schema import CompiledSchema

#: Lines of handler output kept per node (``agents_frame()["last_logs"]``) and per dead letter.
LAST_LOGS = 50


@dataclass(slots=True)
class Record:
    """A published message and what became of it, shared by every queue it is in."""

    message: Message
    #: Node ids whose handler was called with it (whatever the outcome).
    delivered_to: list[str] = field(default_factory=list)
    #: Node ids that did not get it because it failed their input schema.
    rejected_by: list[str] = field(default_factory=list)
    #: Its position in the log of a bus with ``db=`` (0 without one).
    seq: int = 0


@dataclass(slots=True)
class Channel:
    """A named channel, its optional schema and the nodes listening to it."""

    name: str
    schema: CompiledSchema | None = None
    subscribers: list[Node] = field(default_factory=list)
    messages: int = 0
    #: Publishers waiting on a full queue; while any wait, others queue behind them.
    blocked: int = 0
    lock: anyio.Lock | None = None


@dataclass(slots=True)
class DeadLetter:
    """A message an agent could not take: schema rejection or handler error."""

    message_id: str
    channel: str
    agent: str
    reason: str
    #: the failed handler's stack, trimmed to its own frames (None for a rejection)
    traceback: str | None = None
    #: what the failed handler call printed or logged, its latest lines (None: nothing, or read
    #: back from a bus's file, which keeps no logs)
    logs: list[str] | None = None


@dataclass(slots=True, eq=False)
class Node:
    """One registration of an agent: its queue, context and counters."""

    node_id: str
    agent: PubSubAgent
    context: PubSubContext
    #: How many records ``queue`` may hold, counting the places publishers reserved.
    capacity: int
    #: Records routed to it, in order.
    queue: deque[Record] = field(default_factory=deque)
    #: Places in ``queue`` promised to publishers whose message is being stored.
    reserved: int = 0
    #: Messages owed to this node before anything in its queue (replays, interrupted ones).
    backlog: deque[Record] = field(default_factory=deque)
    #: With ``db=``: the log's messages up to ``replay_until`` that its agent may still be
    #: owed are read from the file, a page at a time, after ``replay_after``.
    replay_after: int = 0
    replay_until: int = 0
    #: Messages queued for it (backlog, queue, publishers waiting) and not yet handled.
    pending: int = 0
    delivered: int = 0
    failed: int = 0
    rejected: int = 0
    last_message_at: float | None = None
    #: The latest lines its handler printed or logged (at most ``LAST_LOGS`` lines; None until one).
    last_logs: deque[str] | None = None
    #: What its latest handler call printed or logged (None: nothing), for that call's dead letter.
    call_logs: list[str] | None = None
    in_handler: bool = False
    active: bool = False
    removed: bool = False
    scope: anyio.CancelScope | None = None
    #: Set when something arrives while the delivery task waits for work.
    ready: anyio.Event | None = None
    #: Set when the delivery task takes an item while a publisher waits for room.
    space: anyio.Event | None = None

    @property
    def name(self) -> str:
        """The agent's name."""
        return self.agent.name

    @property
    def full(self) -> bool:
        """True when a publisher must wait before routing another record here."""
        return len(self.queue) + self.reserved >= self.capacity

    @property
    def replaying(self) -> bool:
        """True while messages from the log may still be owed to it."""
        return self.replay_after < self.replay_until
