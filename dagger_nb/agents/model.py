"""The task model: statuses, types and the :class:`Task` record every agent works on.

A job is a tree of tasks (objective → stories → tasks → subtasks, linked by
``parent_task_id``) plus a dependency graph between them (``dependencies``).
Tasks are pydantic models so they serialise to the SQLite store and to a
DataFrame unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

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


def new_task(
    job_id: str,
    task_id: str,
    *,
    description: str,
    agent: str,
    input: dict[str, Any],
    dependencies: list[str],
    parent: str | None,
    task_type: TaskType,
    timeout: float | None,
    max_retries: int,
    acceptance_criteria: str | None,
    now: datetime,
) -> Task:
    """A new pending task, equal to ``Task(...)`` with these fields (``pydantic.ValidationError``
    if one is invalid).

    Every task of a job goes through here, and pydantic's validator costs about five
    times the exact-type checks below, so arguments that already have their field's
    type are taken as they are; anything else (``"task"`` for a ``TaskType``, an int
    timeout, a str subclass, a wrong type) goes through pydantic, which converts or
    rejects it. The input dict is copied either way.
    """
    fields: dict[str, Any] = {  # every field, in the model's order
        "job_id": job_id,
        "task_id": task_id,
        "parent_task_id": parent,
        "description": description,
        "acceptance_criteria": acceptance_criteria,
        "agent": agent,
        "status": TaskStatus.PENDING,
        "status_reason": None,
        "dependencies": dependencies,
        "input": input,
        "output": None,
        "task_type": task_type,
        "timeout": timeout,
        "max_retries": max_retries,
        "retry_count": 0,
        "created_at": now,
        "updated_at": now,
        "summary": None,
    }
    if not (
        type(job_id) is str
        and type(task_id) is str
        and type(description) is str
        and type(agent) is str
        and (parent is None or type(parent) is str)
        and (acceptance_criteria is None or type(acceptance_criteria) is str)
        and type(task_type) is TaskType
        and (timeout is None or (type(timeout) is float and timeout > 0))
        and type(max_retries) is int
        and max_retries >= 0
        and type(input) is dict
        and _all_str(input)
        and _all_str(dependencies)
    ):
        return Task.model_validate({name: fields[name] for name in _GIVEN})
    fields["dependencies"] = list(dependencies)
    fields["input"] = dict(input)
    return _unvalidated(Task, fields, set(_GIVEN))


def _all_str(items: Iterable[object]) -> bool:
    # a loop, not all() over a generator: this runs twice per task added
    for item in items:  # noqa: SIM110
        if type(item) is not str:
            return False
    return True


# The fields new_task() takes from its arguments (and the clock): pydantic records exactly
# these as set, not the defaults, so a task built either way has the same model_fields_set.
_GIVEN = frozenset(Task.model_fields) - {"status", "status_reason", "output", "retry_count", "summary"}


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
    return _unvalidated(Task, fields, set(task.__pydantic_fields_set__))


def assign(task: Task, **changes: Any) -> None:
    """Set fields of ``task`` without pydantic's per-field ``__setattr__`` (the runner's hot path).

    Safe because tasks do not validate assignment; callers pass values of the right type.
    """
    task.__dict__.update(changes)


def completed_output(data: dict[str, Any]) -> TaskOutput:
    """``TaskOutput(success=True, data=data)`` for a dict already checked, built without validation."""
    return _unvalidated(TaskOutput, {"success": True, "data": data, "error": None}, {"success", "data"})


_Model = TypeVar("_Model", bound=BaseModel)


def _unvalidated(model: type[_Model], fields: dict[str, Any], fields_set: set[str]) -> _Model:
    """An instance of ``model`` holding ``fields`` (every field, of the right types) as they are."""
    instance = _new(model)
    _setattr(instance, "__dict__", fields)
    _setattr(instance, "__pydantic_fields_set__", fields_set)
    _setattr(instance, "__pydantic_extra__", None)
    _setattr(instance, "__pydantic_private__", None)
    return instance


_new = object.__new__
_setattr = object.__setattr__


#: The column order of :meth:`TaskManager.tasks_frame` and :meth:`JobReport.to_frame`.
TASK_FIELDS: tuple[str, ...] = tuple(Task.model_fields)
