"""Events a DAG run emits, in order, for dashboards, progress lines and persistence.

Every event has ``run_id``, ``timestamp`` (seconds since the epoch, UTC) and,
except :class:`RunFinished`, the ``node`` it is about. Events are shared by every
subscriber: read them, never modify them (they are plain slotted records, not
frozen ones, because a frozen record's ``__init__`` sets each field through
``object.__setattr__``, and a run creates two per node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagger_nb.dag.report import ExecutionReport


@dataclass(slots=True)
class NodeStarted:
    """An attempt of ``node`` started."""

    run_id: str
    node: str
    attempt: int
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class NodeRetrying:
    """Attempt ``attempt`` of ``node`` failed with ``error``; the next starts after ``delay`` s."""

    run_id: str
    node: str
    attempt: int
    error: str
    delay: float
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class NodeWaiting:
    """The next attempt of ``node`` waits for attempt ``abandoned_attempt``, abandoned after its
    timeout, to return from its thread (two attempts of one node never run at once)."""

    run_id: str
    node: str
    abandoned_attempt: int
    reason: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class NodeSucceeded:
    """``node`` finished after ``attempts`` attempts, producing ``outputs``."""

    run_id: str
    node: str
    attempts: int
    outputs: dict[str, Any]
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class NodeCached:
    """An incremental run reused ``node``'s stored result (from run ``from_run``) instead of running it."""

    run_id: str
    node: str
    from_run: str
    outputs: dict[str, Any]
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class NodeFailed:
    """``node`` failed for good with ``error``; ``traceback`` is its last attempt's, trimmed to the user's frames."""

    run_id: str
    node: str
    attempts: int
    error: str
    timestamp: float = field(default_factory=time)
    traceback: str | None = None


@dataclass(slots=True)
class NodeSkipped:
    """``node`` will not run because ``reason`` (an upstream node failed)."""

    run_id: str
    node: str
    reason: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class NodeCancelled:
    """``node`` was running when the run was stopped, cancelled or timed out."""

    run_id: str
    node: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class NodeAdded:
    """``node`` was added to the running workflow (by an action or a hook)."""

    run_id: str
    node: str
    action: str
    dependencies: list[str]
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class HumanInputRequested:
    """``node`` asks a person ``prompt``; answer with ``RunHandle.respond(request_id, value)``."""

    run_id: str
    node: str
    request_id: str
    prompt: str
    schema: dict[str, Any] | None
    default: Any
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class HumanInputReceived:
    """Question ``request_id`` was answered with ``value`` (or ``default`` on autopilot)."""

    run_id: str
    node: str
    request_id: str
    value: Any
    timed_out: bool = False
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class RunFinished:
    """The run ended; ``report`` holds every node's outcome."""

    run_id: str
    status: str
    report: ExecutionReport
    timestamp: float = field(default_factory=time)


DagEvent = (
    NodeStarted
    | NodeRetrying
    | NodeWaiting
    | NodeSucceeded
    | NodeCached
    | NodeFailed
    | NodeSkipped
    | NodeCancelled
    | NodeAdded
    | HumanInputRequested
    | HumanInputReceived
    | RunFinished
)
