"""The task model: statuses, types and the :class:`Task` record every agent works on.

A job is a tree of tasks (objective → stories → tasks → subtasks, linked by
``parent_task_id``) plus a dependency graph between them (``dependencies``).
Callers see tasks as :class:`Task`, a pydantic model; the manager keeps each
task's live state in a :class:`TaskRecord` and hands out snapshots of it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from operator import attrgetter
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


# Python 3.11's EnumType defines __getattr__, so no read of a member (TaskStatus.PENDING)
# is specialised: each goes through the slow attribute path, and a job's run tests and sets
# statuses several times per task. Its hot paths use these module-level names.
PENDING, IN_PROGRESS, COMPLETED, FAILED, BLOCKED = (
    TaskStatus.PENDING, TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.BLOCKED,
)


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class TaskOutput(BaseModel):
    """What the last attempt of a task produced: ``data`` on success, ``error`` otherwise."""

    model_config = ConfigDict(extra="forbid")

    success: bool
    data: dict[str, Any] | None = None
    error: str | None = None
    #: the failed attempt's stack, trimmed to the agent's own frames (None when nothing raised)
    traceback: str | None = None
    #: what the last attempt printed or logged, one line each, bounded (None when nothing)
    logs: list[str] | None = None


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
    #: tokens its attempts reported (``ctx.record_usage``), every attempt counted
    tokens: int = Field(default=0, ge=0)
    #: the cost its attempts reported, when one reported any
    cost: float | None = Field(default=None, ge=0)
    #: the models its attempts named, in the order first named
    models: list[str] = Field(default_factory=list)


@dataclass(slots=True, kw_only=True, eq=False)
class TaskRecord:
    """The manager's live, mutable state of one task: the fields of :class:`Task`.

    Callers only ever see :class:`Task` snapshots of it (:func:`snapshot`). A plain
    slotted class rather than the model because the runner reads and writes these
    fields many times per task: a plain attribute read is cheaper than a model's
    (whose ``__getattr__`` hook keeps Python from specialising the read), and
    making one skips validation the manager has already done.
    """

    job_id: str
    task_id: str
    parent_task_id: str | None
    description: str
    acceptance_criteria: str | None
    agent: str
    status: TaskStatus
    status_reason: str | None
    dependencies: list[str]
    input: dict[str, Any]
    output: TaskOutput | None
    task_type: TaskType
    timeout: float | None
    max_retries: int
    retry_count: int
    created_at: datetime
    updated_at: datetime
    summary: str | None
    tokens: int
    cost: float | None
    models: Sequence[str]  # replaced, never changed in place: a new task shares one empty tuple

    @classmethod
    def of(cls, task: Task) -> TaskRecord:
        """The record of a validated ``task`` (which it then owns)."""
        return cls(**task.__dict__)


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
) -> TaskRecord:
    """A new pending task, holding what ``Task(...)`` with these fields would
    (``pydantic.ValidationError`` if one is invalid).

    Every task of a job goes through here, and pydantic's validator costs much more
    than the exact-type checks below, so arguments that already have their field's
    type are taken as they are; anything else (``"task"`` for a ``TaskType``, an int
    timeout, a str subclass, a wrong type) goes through pydantic, which converts or
    rejects it. The input dict is copied either way.
    """
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
        return TaskRecord.of(
            Task(
                job_id=job_id,
                task_id=task_id,
                parent_task_id=parent,
                description=description,
                acceptance_criteria=acceptance_criteria,
                agent=agent,
                dependencies=dependencies,
                input=input,
                task_type=task_type,
                timeout=timeout,
                max_retries=max_retries,
                created_at=now,
                updated_at=now,
            )
        )
    # Filled in field by field: cheaper than the dataclass's __init__ with a keyword per field.
    task = _new(TaskRecord)
    task.job_id = job_id
    task.task_id = task_id
    task.parent_task_id = parent
    task.description = description
    task.acceptance_criteria = acceptance_criteria
    task.agent = agent
    task.status = PENDING
    task.status_reason = None
    task.dependencies = list(dependencies)
    task.input = dict(input)
    task.output = None
    task.task_type = task_type
    task.timeout = timeout
    task.max_retries = max_retries
    task.retry_count = 0
    task.created_at = now
    task.updated_at = now
    task.summary = None
    task.tokens = 0
    task.cost = None
    task.models = _NO_MODELS
    return task


_NO_MODELS: tuple[str, ...] = ()


def _all_str(items: Iterable[object]) -> bool:
    # a loop, not all() over a generator: this runs twice per task added
    for item in items:  # noqa: SIM110
        if type(item) is not str:
            return False
    return True


def snapshot(task: TaskRecord, *, deep: bool = False) -> Task:
    """A :class:`Task` holding ``task``'s fields now, which later changes to ``task`` do not reach.

    With ``deep=True`` nested values (the input's, the output) are copies too, so
    nothing a caller does to the snapshot reaches the manager's task.
    """
    values = field_values(task)
    return task_from_values(copy.deepcopy(values) if deep else values)


def task_from_values(values: tuple[Any, ...]) -> Task:
    """The :class:`Task` with the field ``values`` that :data:`field_values` read from a record.

    The manager never mutates a task's containers in place (it replaces them), so
    copying the top-level containers is enough, now or later. Built without
    validation; every field counts as set.
    """
    fields = dict(zip(TASK_FIELDS, values, strict=True))
    fields["dependencies"] = list(fields["dependencies"])
    fields["input"] = dict(fields["input"])
    fields["models"] = list(fields["models"])
    return _unvalidated(Task, fields, _EVERY_FIELD.copy())


#: The column order of :meth:`TaskManager.tasks_frame` and :meth:`JobReport.to_frame`.
TASK_FIELDS: tuple[str, ...] = tuple(Task.model_fields)
_EVERY_FIELD = set(TASK_FIELDS)
#: ``field_values(record)``: the values of a record's fields, in :data:`TASK_FIELDS` order.
field_values = attrgetter(*TASK_FIELDS)


def completed_output(data: dict[str, Any], logs: list[str] | None = None) -> TaskOutput:
    """``TaskOutput(success=True, data=data, logs=logs)`` for a dict already checked, built without validation."""
    fields = {"success": True, "data": data, "error": None, "traceback": None, "logs": logs}
    return _unvalidated(TaskOutput, fields, {"success", "data"} if logs is None else {"success", "data", "logs"})


_Model = TypeVar("_Model", bound=BaseModel)


def _unvalidated(model: type[_Model], fields: dict[str, Any], fields_set: set[str]) -> _Model:
    """An instance of ``model`` holding ``fields`` (every field, of the right types) as they are."""
    instance = _new(model)
    _set_dict(instance, "__dict__", fields)
    _set_fields_set(instance, fields_set)
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance


_new = object.__new__
_set_dict = object.__setattr__
# BaseModel's own slots, set through their descriptors: cheaper than object.__setattr__ by name
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
