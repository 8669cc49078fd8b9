"""What an agent receives besides its input: :class:`TaskContext`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dagger_nb.agents.model import DONE, Task, TaskRecord, TaskType, snapshot
from dagger_nb.errors import NeedsDependencies, TaskError

if TYPE_CHECKING:
    from dagger_nb.agents.journal import AttemptJournal
    from dagger_nb.agents.manager import TaskManager

_CURRENT: Any = object()


class ChildTask(BaseModel):
    """One child of :meth:`TaskContext.delegate` (a plain dict with these keys works too)."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    input: dict[str, Any] = Field(default_factory=dict)
    #: defaults to the child's key in the delegation
    description: str | None = None
    #: keys of earlier children of the same delegation, or ids of tasks of the job
    dependencies: list[str | int] = Field(default_factory=list)
    task_type: TaskType = TaskType.SUBTASK
    timeout: float | None = None
    max_retries: int = 0
    acceptance_criteria: str | None = None


class TaskContext:
    """The running task's view of its job: its snapshot, its dependencies' outputs, new work.

    Safe to use from sync agents too (they run in a worker thread; the calls
    that change the job are carried over to the event loop).
    """

    __slots__ = ("_journal", "_live", "attempt", "job_id", "manager", "task_id")

    def __init__(
        self, manager: TaskManager, task: TaskRecord, *, attempt: int, journal: AttemptJournal | None = None
    ) -> None:
        self.manager = manager
        self._live = task
        self._journal = journal
        #: The running task's id.
        self.task_id = task.task_id
        #: The running task's job.
        self.job_id = task.job_id
        #: The attempt number, from 1.
        self.attempt = attempt

    @property
    def task(self) -> Task:
        """A snapshot of the running task (its dependencies as of now)."""
        return snapshot(self._live)

    def dependency_outputs(self) -> list[dict[str, Any]]:
        """The outputs of the task's dependencies, in dependency order (all must be completed)."""
        return self.manager.get_dependency_outputs(self.task_id)

    def add_task(
        self,
        description: str,
        agent: str,
        input: dict[str, Any] | None = None,
        *,
        dependencies: tuple[str, ...] | list[str] = (),
        parent: str | None = _CURRENT,
        task_type: TaskType = TaskType.TASK,
        task_id: str | None = None,
        timeout: float | None = None,
        max_retries: int = 0,
        acceptance_criteria: str | None = None,
    ) -> str:
        """:meth:`TaskManager.add_task` in this job; ``parent`` defaults to the running task.

        The task becomes part of the job (and of the database) when this attempt
        ends, together with everything else the attempt did; if the attempt never
        ends (the process is killed), it was never added.
        """
        manager = self.manager
        return manager._on_loop(
            manager._add_task,
            self.job_id,
            description,
            agent,
            input,
            tuple(dependencies),
            self.task_id if parent is _CURRENT else parent,
            task_type,
            task_id,
            timeout,
            max_retries,
            acceptance_criteria,
            self._journal,
        )

    def spawn(
        self,
        agent: str,
        input: dict[str, Any] | None,
        *,
        description: str,
        task_type: TaskType = TaskType.SUBTASK,
    ) -> str:
        """Add a child task for ``agent`` and make the running task depend on it.

        Raise :class:`NeedsDependencies` afterwards to be run again, with
        :meth:`dependency_outputs` filled in, once the children completed.
        """
        child = self.add_task(description, agent, input, task_type=task_type)
        self.depend_on(child)
        return child

    def depend_on(self, task_id: str) -> None:
        """Make the running task depend on ``task_id`` (when this attempt ends, with the rest of it)."""
        manager = self.manager
        manager._on_loop(manager._add_dependency, self.task_id, task_id, self._journal)

    @overload
    def delegate(self, children: Mapping[str, Any], *, wait: bool = True) -> dict[str, Any]: ...
    @overload
    def delegate(self, children: Sequence[Any], *, wait: bool = True) -> list[Any]: ...

    def delegate(self, children: Mapping[str, Any] | Sequence[Any], *, wait: bool = True) -> Any:
        """Hand work to child tasks and wait for it: the re-entrant planner in one call.

        ``children`` is a mapping of key -> :class:`ChildTask` (or a dict with its
        fields), or a list of them (keyed by position). A child's ``dependencies``
        name earlier keys of the same call, or tasks of the job. The first call
        adds each child (id ``<this task>/<key>``), makes the running task depend
        on all of them and, with ``wait=True``, parks it (raises
        :class:`NeedsDependencies`). When the task runs again with every child
        done, the same call adds nothing and returns the children's output data,
        keyed as given. A child added by an earlier attempt is never added twice;
        a new key adds a new child. With ``wait=False`` it returns the children's
        ids at once and does not park the task.
        """
        keys, specs = _delegation(children)
        tasks = self.manager._tasks
        ids: list[str] = []
        for key, spec in zip(keys, specs, strict=True):
            child_id = f"{self.task_id}/{key}"
            if child_id not in tasks:
                self._add_child(child_id, key, spec, dict(zip(keys[: len(ids)], ids, strict=True)))
            self.depend_on(child_id)
            ids.append(child_id)
        if not wait:
            return _keyed(children, keys, ids)
        pending = [child for child in ids if tasks[child].status not in DONE]
        if pending:
            count = f"{len(pending)} delegated task{'s' if len(pending) != 1 else ''}"
            raise NeedsDependencies(f"waiting for {count}")
        outputs = [_output_data(tasks[child]) for child in ids]
        return _keyed(children, keys, outputs)

    def _add_child(self, child_id: str, key: str, spec: ChildTask, earlier: dict[str, str]) -> None:
        dependencies = []
        for dep in spec.dependencies:
            name = str(dep)
            if name in earlier:
                dependencies.append(earlier[name])
            elif isinstance(dep, str) and dep in self.manager._tasks:
                dependencies.append(dep)
            else:
                raise TaskError(
                    f"task '{self.task_id}': delegated child '{key}' depends on '{name}', which is neither an "
                    "earlier child of this delegation nor a task of the job"
                )
        self.add_task(
            spec.description if spec.description is not None else key,
            spec.agent,
            spec.input,
            dependencies=dependencies,
            task_type=spec.task_type,
            task_id=child_id,
            timeout=spec.timeout,
            max_retries=spec.max_retries,
            acceptance_criteria=spec.acceptance_criteria,
        )

    def __repr__(self) -> str:
        return f"<TaskContext task={self.task_id!r} job={self.job_id!r} attempt={self.attempt}>"


def _delegation(children: Mapping[str, Any] | Sequence[Any]) -> tuple[list[str], list[ChildTask]]:
    """The keys and validated specs of a delegation (``TaskError`` naming the child at fault)."""
    if isinstance(children, Mapping):
        items = [(str(key), spec) for key, spec in children.items()]
    elif isinstance(children, Sequence) and not isinstance(children, str | bytes):
        items = [(str(position), spec) for position, spec in enumerate(children)]
    else:
        raise TaskError(f"delegate() takes a mapping or a list of children, got {type(children).__name__}")
    specs = []
    for key, spec in items:
        if not key or "/" in key:
            raise TaskError(f"delegated child key {key!r} must be non-empty and without '/'")
        try:
            specs.append(spec if isinstance(spec, ChildTask) else ChildTask.model_validate(spec))
        except ValidationError as error:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'child'}: {e['msg']}" for e in error.errors())
            raise TaskError(f"delegated child '{key}': {details}") from None
    return [key for key, _ in items], specs


def _keyed(children: Mapping[str, Any] | Sequence[Any], keys: list[str], values: list[Any]) -> Any:
    if isinstance(children, Mapping):
        return dict(zip(children, values, strict=True))
    return values


def _output_data(task: TaskRecord) -> dict[str, Any]:
    output = task.output
    return {} if output is None or output.data is None else dict(output.data)
