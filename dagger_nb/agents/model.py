"""The task model: statuses, types and the :class:`Task` record every agent works on.

A job is a tree of tasks (objective → stories → tasks → subtasks, linked by
``parent_task_id``) plus a dependency graph between them (``dependencies``).
Tasks are pydantic models so they serialise to the SQLite store and to a
DataFrame unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class TaskType(StrEnum):
    """The level of a task in the objective → story → task → subtask hierarchy."""

    OBJECTIVE = "objective"
    STORY = "story"
    TASK = "task"
    SUBTASK = "subtask"


class JobStatus(StrEnum):
    """The outcome of running a job."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses that satisfy a dependency.
DONE = frozenset({TaskStatus.COMPLETED, TaskStatus.ACCEPTED})
#: Statuses that fail every task depending on it.
BROKEN = frozenset({TaskStatus.FAILED, TaskStatus.REJECTED})


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class TaskOutput(BaseModel):
    """What the last attempt of a task produced: ``data`` on success, ``error`` otherwise."""

    model_config = ConfigDict(extra="forbid")

    success: bool
    data: dict[str, Any] | None = None
    error: str | None = None


class Task(BaseModel):
    """One unit of work for one agent, with its place in the job and its outcome."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    task_id: str
    parent_task_id: str | None = None
    description: str
    acceptance_criteria: str | None = None
    agent: str
    status: TaskStatus = TaskStatus.PENDING
    status_reason: str | None = None
    dependencies: list[str] = Field(default_factory=list)
    input: dict[str, Any] = Field(default_factory=dict)
    output: TaskOutput | None = None
    task_type: TaskType = TaskType.TASK
    timeout: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=0, ge=0)
    retry_count: int = Field(default=0, ge=0)
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    summary: str | None = None


def snapshot(task: Task) -> Task:
    """A copy of ``task`` that later changes to the original do not reach.

    The manager never mutates a task's containers in place (it replaces them),
    so copying the top-level containers is enough. Built directly rather than
    with ``model_copy()``, which costs twice as much, because every report
    copies every task.
    """
    fields = dict(task.__dict__)
    fields["dependencies"] = list(fields["dependencies"])
    fields["input"] = dict(fields["input"])
    copy = _new(Task)
    _setattr(copy, "__dict__", fields)
    _setattr(copy, "__pydantic_fields_set__", set(task.__pydantic_fields_set__))
    _setattr(copy, "__pydantic_extra__", None)
    _setattr(copy, "__pydantic_private__", None)
    return copy


def assign(task: Task, **changes: Any) -> None:
    """Set fields of ``task`` without pydantic's per-field ``__setattr__`` (the runner's hot path).

    Safe because tasks do not validate assignment; callers pass values of the right type.
    """
    task.__dict__.update(changes)


def completed_output(data: dict[str, Any]) -> TaskOutput:
    """``TaskOutput(success=True, data=data)`` for a dict already checked, built without validation."""
    output = _new(TaskOutput)
    _setattr(output, "__dict__", {"success": True, "data": data, "error": None})
    _setattr(output, "__pydantic_fields_set__", {"success", "data"})
    _setattr(output, "__pydantic_extra__", None)
    _setattr(output, "__pydantic_private__", None)
    return output


_new = object.__new__
_setattr = object.__setattr__


#: The column order of :meth:`TaskManager.tasks_frame` and :meth:`JobReport.to_frame`.
TASK_FIELDS: tuple[str, ...] = tuple(Task.model_fields)
