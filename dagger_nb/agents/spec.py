"""What a new task is made of: :class:`TaskSpec`, the one list of the add-task options, and task ids.

``TaskManager.add_task``, ``TaskContext.add_task`` and the cluster worker's
``RemoteTaskContext.add_task`` all take ``description, agent, input`` and the
remaining fields of :class:`TaskSpec` as keyword options; :meth:`TaskContext.delegate`
takes them per child (:class:`ChildTask`). An option the model does not
define is refused naming the known ones.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dagger_nb.agents.model import TaskRecord, TaskType, new_task, utc_now
from dagger_nb.errors import AgentNotFound, TaskError

if TYPE_CHECKING:
    from dagger_nb.agents._graph import TaskGraph
    from dagger_nb.agents.registry import TaskAgentRegistry

#: The largest ``max_retries`` a task may have: a runaway retry loop stays bounded.
MAX_RETRIES = 1000


class TaskSpec(BaseModel):
    """A task to add: its description, its agent and input, and the add-task options.

    ``TaskManager.add_task(job_id, description, agent, input, **options)`` takes
    the other fields as keyword options (so do ``ctx.add_task`` and the cluster
    context's); ``TaskSpec(...).options()`` gives them back as such.
    """

    model_config = ConfigDict(extra="forbid")

    description: str
    agent: str
    input: dict[str, Any] = Field(default_factory=dict)
    #: ids of tasks of the same job this one waits for
    dependencies: list[str] = Field(default_factory=list)
    #: the task this one belongs under (``ctx.add_task`` defaults it to the running task)
    parent: str | None = None
    task_type: TaskType = TaskType.TASK
    #: generated (:func:`new_task_id`) when not given
    task_id: str | None = None
    #: seconds one attempt may run
    timeout: float | None = Field(default=None, gt=0)
    #: further attempts after a failed one, from 0 to :data:`MAX_RETRIES`
    max_retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    acceptance_criteria: str | None = None

    @field_validator("timeout", "max_retries", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"a boolean is not a number, got {value!r}")
        return value

    def options(self) -> dict[str, Any]:
        """The keyword options of ``add_task`` this spec holds (every field but description, agent, input)."""
        return {name: getattr(self, name) for name in OPTION_NAMES}


#: The keyword options of every ``add_task``, with their defaults (those without a factory).
OPTION_NAMES: tuple[str, ...] = tuple(
    name for name in TaskSpec.model_fields if name not in ("description", "agent", "input")
)
OPTION_DEFAULTS: dict[str, Any] = {
    name: TaskSpec.model_fields[name].get_default(call_default_factory=True) for name in OPTION_NAMES
}
_KNOWN = frozenset(OPTION_NAMES)
# The defaults as module-level names for new_record, which runs for every task added.
_NO_DEPENDENCIES: tuple[str, ...] = tuple(OPTION_DEFAULTS["dependencies"])
_DEFAULT_PARENT, _DEFAULT_TYPE, _DEFAULT_ID, _DEFAULT_TIMEOUT, _DEFAULT_RETRIES, _DEFAULT_CRITERIA = (
    OPTION_DEFAULTS[name]
    for name in ("parent", "task_type", "task_id", "timeout", "max_retries", "acceptance_criteria")
)


def check_options(options: Mapping[str, Any], where: str = "add_task()") -> None:
    """:class:`TaskError` naming every keyword in ``options`` that is not an add-task option."""
    if not _KNOWN.issuperset(options):
        unknown = ", ".join(repr(name) for name in options if name not in _KNOWN)
        raise TaskError(f"{where} got unknown option(s) {unknown} (known: {', '.join(OPTION_NAMES)})")


def option_problems(timeout: object, max_retries: object) -> list[str]:
    """What is wrong with the ``timeout`` and ``max_retries`` options (a boolean is neither)."""
    problems = []
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= MAX_RETRIES:
        problems.append(f"max_retries must be a whole number from 0 to {MAX_RETRIES:,}, got {max_retries!r}")
    if isinstance(timeout, bool):
        problems.append(f"timeout must be a number of seconds (or None), got {timeout!r}")
    return problems


class ChildTask(TaskSpec):
    """One child of :meth:`TaskContext.delegate` (a plain dict with these keys works too).

    A :class:`TaskSpec` whose ``description`` defaults to the child's key, whose
    ``dependencies`` may also name earlier children of the same delegation (by key
    or position), and whose ``task_id`` and ``parent`` the delegation sets.
    """

    #: defaults to the child's key in the delegation
    description: str | None = None  # type: ignore[assignment]
    #: keys of earlier children of the same delegation, or ids of tasks of the job
    dependencies: list[str | int] = Field(default_factory=list)  # type: ignore[assignment]
    task_type: TaskType = TaskType.SUBTASK

    @model_validator(mode="after")
    def _placed_by_the_delegation(self) -> ChildTask:
        given = [name for name in ("task_id", "parent") if name in self.model_fields_set]
        if given:
            raise ValueError(f"{' and '.join(given)} of a delegated child are set by delegate()")
        return self


# Generated task ids need to be unique, not unpredictable: a generator seeded from os.urandom
# costs no system call per task. A private one, so that a notebook's random.seed(42) cannot
# make a rerun generate the ids its database already holds; reseeded in a forked child (a
# cluster worker forked from the notebook's process must not repeat the notebook's ids).
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_random_bits = _ids.getrandbits


def new_task_id() -> str:
    """A new task id, ``task-`` and 12 hex digits: the one scheme, in the notebook and on a worker."""
    return f"task-{_random_bits(48):012x}"


def child_task_id(parent: str, key: str) -> str:
    """The id of the child ``key`` that :meth:`TaskContext.delegate` gives task ``parent``."""
    return f"{parent}/{key}"


def new_record(
    registry: TaskAgentRegistry,
    graph: TaskGraph,
    job_id: str,
    description: str,
    agent: str,
    input: dict[str, Any] | None,
    options: Mapping[str, Any],
) -> TaskRecord:
    """The new pending task these add-task arguments describe, checked against ``graph``:
    :class:`TaskError` naming every problem, :class:`AgentNotFound` for an unknown agent."""
    if not job_id:
        raise TaskError("job id must not be empty")
    if agent not in registry:
        raise AgentNotFound(agent, registry.names())
    if options and not _KNOWN.issuperset(options):
        check_options(options)
    get = options.get
    task_id = get("task_id", _DEFAULT_ID)
    if task_id is None:
        task_id = new_task_id()
    dependencies = tuple(get("dependencies", _NO_DEPENDENCIES))
    parent = get("parent", _DEFAULT_PARENT)
    timeout, max_retries = get("timeout", _DEFAULT_TIMEOUT), get("max_retries", _DEFAULT_RETRIES)
    problems = graph.problems(job_id, task_id, dependencies, parent)
    if type(max_retries) is not int or not 0 <= max_retries <= MAX_RETRIES or type(timeout) is bool:
        problems += option_problems(timeout, max_retries)
    if problems:
        raise TaskError(f"cannot add task '{task_id}' to job '{job_id}': {'; '.join(problems)}")
    try:
        return new_task(
            job_id,
            task_id,
            description=description,
            agent=agent,
            input={} if input is None else input,
            dependencies=list(dict.fromkeys(dependencies)),
            parent=parent,
            task_type=get("task_type", _DEFAULT_TYPE),
            timeout=timeout,
            max_retries=max_retries,
            acceptance_criteria=get("acceptance_criteria", _DEFAULT_CRITERIA),
            now=utc_now(),
        )
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise TaskError(f"cannot add task '{task_id}' to job '{job_id}': {details}") from None
