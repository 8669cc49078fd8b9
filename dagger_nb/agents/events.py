"""Events a running job emits, in order, to :meth:`JobHandle.subscribe`.

Each is a small record with the ``job_id``, the ``task_id`` where one applies,
and a ``timestamp`` in seconds since the epoch (UTC), as the DAG and pub/sub
events have it (for a task's start and completion, the time of the change: the
task's ``updated_at.timestamp()``); every subscriber gets the same
record, so read it and never modify it. A task event is emitted only once the change
it reports is durable (with a database), so a dashboard never shows a state
the store could lose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import time
from typing import Any

from dagger_nb.agents.model import JobStatus, TaskStatus


@dataclass(slots=True)
class TaskAdded:
    """A task was added to the job while it runs."""

    job_id: str
    task_id: str
    description: str
    agent: str
    parent_task_id: str | None
    dependencies: tuple[str, ...]
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class TaskStarted:
    """An attempt of a task started (``attempt`` counts from 1)."""

    job_id: str
    task_id: str
    agent: str
    attempt: int
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class TaskRetrying:
    """An attempt failed and the task went back to pending for another one."""

    job_id: str
    task_id: str
    attempt: int
    error: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class TaskCompleted:
    """A task completed with ``output``."""

    job_id: str
    task_id: str
    output: dict[str, Any] | None
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class TaskFailed:
    """A task failed for good (retries used up, a failed dependency, termination)."""

    job_id: str
    task_id: str
    error: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class TaskBlocked:
    """A task is parked until its dependencies complete."""

    job_id: str
    task_id: str
    reason: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class TaskStatusChanged:
    """A task's status was set through the manager to something another event does not cover."""

    job_id: str
    task_id: str
    status: TaskStatus
    reason: str | None
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class JobStalled:
    """No task changed for the heartbeat interval; ``action`` says what was done about it."""

    job_id: str
    stalled_tasks: tuple[str, ...]
    action: str
    timestamp: float = field(default_factory=time)


@dataclass(slots=True)
class JobFinished:
    """The job ended with ``status``; always the last event."""

    job_id: str
    status: JobStatus
    timestamp: float = field(default_factory=time)


JobEvent = (
    TaskAdded
    | TaskStarted
    | TaskRetrying
    | TaskCompleted
    | TaskFailed
    | TaskBlocked
    | TaskStatusChanged
    | JobStalled
    | JobFinished
)
