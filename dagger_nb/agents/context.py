"""What an agent receives besides its input: :class:`TaskContext`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from pydantic import ValidationError

from dagger_nb.agents.journal import check_usage
from dagger_nb.agents.model import DONE, Task, TaskRecord, TaskType, snapshot
from dagger_nb.agents.spec import ChildTask, check_options, child_task_id
from dagger_nb.errors import NeedsDependencies, TaskError

if TYPE_CHECKING:
    from dagger_nb.agents._edits import TaskEdits
    from dagger_nb.agents.journal import AttemptJournal
    from dagger_nb.agents.manager import TaskManager

__all__ = ["ChildTask", "TaskContext"]


class TaskContext:
    """The running task's view of its job: its snapshot, its dependencies' outputs, new work.

    Safe to use from sync agents too (they run in a worker thread; the calls
    that change the job are carried over to the event loop).
    """

    __slots__ = ("_claimed", "_edits", "_journal", "_live", "attempt", "job_id", "manager", "task_id")

    def __init__(
        self,
        manager: TaskManager,
        task: TaskRecord,
        *,
        edits: TaskEdits,
        attempt: int,
        journal: AttemptJournal | None = None,
    ) -> None:
        self.manager = manager
        self._edits = edits
        self._live = task
        self._journal = journal
        #: children of earlier runs that a delegate() call of this attempt asked for again
        self._claimed: set[str] = set()
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

    def add_task(self, description: str, agent: str, input: dict[str, Any] | None = None, **options: Any) -> str:
        """:meth:`TaskManager.add_task` in this job (``options`` as there); ``parent`` defaults
        to the running task.

        The task becomes part of the job (and of the database) when this attempt
        ends, together with everything else the attempt did; if the attempt never
        ends (the process is killed), it was never added.
        """
        check_options(options)
        if "parent" not in options:
            options["parent"] = self.task_id
        return self._edits.add_task(self.job_id, description, agent, input, options, self._journal)

    def record_usage(self, tokens: int, cost: float | None = None, model: str | None = None) -> None:
        """Report what this attempt used: ``tokens`` (a whole number >= 0), its ``cost`` and the ``model``.

        Counted in the task's and the job's totals when the attempt ends; with
        ``TaskManager(max_tokens=...)``, an attempt that takes the job's total past
        it fails its task ("token budget exceeded: N of M"). Call it as often as
        you like: the reports add up.
        """
        check_usage(tokens, cost, model)
        if self._journal is None:
            raise TaskError(f"task '{self.task_id}': record_usage() needs a running attempt")
        self._edits.record_usage(self._journal, tokens, cost, model)

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
        self._edits.add_dependency(self.task_id, task_id, self._journal)

    @overload
    def delegate(self, children: Mapping[str, Any], *, wait: bool = True) -> dict[str, Any]: ...
    @overload
    def delegate(self, children: Sequence[Any], *, wait: bool = True) -> list[Any]: ...

    def delegate(self, children: Mapping[str, Any] | Sequence[Any], *, wait: bool = True) -> Any:
        """Hand work to child tasks and wait for it: the re-entrant planner in one call.

        ``children`` is a mapping of key -> :class:`ChildTask` (or a dict with its
        fields), or a list of them (keyed by position). A child's ``dependencies``
        name earlier keys of the same call, or tasks of the job. The first call
        adds each child (id ``<this task>/<key>``, :func:`child_task_id`), makes the running task depend
        on all of them and, with ``wait=True``, parks it (raises
        :class:`NeedsDependencies`). When the task runs again with every child
        done, the same call adds nothing and returns the children's output data,
        keyed as given. A child added by an earlier attempt is never added twice.
        With ``wait=False`` it returns the children's ids at once and does not
        park the task.

        The plan must be the same each time the task runs: a call that gives new
        keys next to children an earlier run delegated, or while some of those are
        not asked for again (a planner that answers differently each time), raises
        :class:`TaskError` naming the task and the keys, rather than adding another
        plan and parking the task again, for ever. Several calls in turn (a second
        stage planned from the first one's outputs, in a call of its own) are fine.
        """
        keys, specs = _delegation(children)
        tasks = self._edits.tasks
        self._check_same_plan(keys, tasks)
        ids: list[str] = []
        earlier: dict[str, str] = {}  # the children so far by key, which a later child may name
        for key, spec in zip(keys, specs, strict=True):
            child_id = child_task_id(self.task_id, key)
            if child_id not in tasks:
                self._add_child(child_id, key, spec, earlier)
            self.depend_on(child_id)
            ids.append(child_id)
            earlier[key] = child_id
        if not wait:
            return _keyed(children, ids)
        pending = [child for child in ids if tasks[child].status not in DONE]
        if pending:
            count = f"{len(pending)} delegated task{'s' if len(pending) != 1 else ''}"
            raise NeedsDependencies(f"waiting for {count}")
        outputs = [_output_data(tasks[child]) for child in ids]
        return _keyed(children, outputs)

    def _check_same_plan(self, keys: list[str], tasks: Mapping[str, TaskRecord]) -> None:
        """:class:`TaskError` if this call adds children while an earlier run's are not asked for again."""
        prefix = f"{self.task_id}/"
        earlier = [
            dep for dep in self._live.dependencies
            if dep.startswith(prefix) and dep in tasks and tasks[dep].parent_task_id == self.task_id
        ]
        ids = [child_task_id(self.task_id, key) for key in keys]
        new = [key for key, child in zip(keys, ids, strict=True) if child not in tasks] if earlier else []
        if new:
            # New keys are a next stage only in a call of their own, once every child of the
            # earlier runs was asked for again; else the plan itself changed.
            again = [child for child in ids if child in earlier]
            unclaimed = [child for child in earlier if child not in self._claimed and child not in ids]
            if again or unclaimed:
                raise TaskError(
                    f"task '{self.task_id}': delegate() got a different plan than an earlier run of this task: "
                    f"new keys {_few(new)}; the earlier run delegated {_few([c[len(prefix):] for c in earlier])}. "
                    "A planner that is run again must delegate the same keys: compute the plan once and keep "
                    "it (docs/agents.md, 'Keep the plan stable')"
                )
        self._claimed.update(ids)

    def _add_child(self, child_id: str, key: str, spec: ChildTask, earlier: dict[str, str]) -> None:
        dependencies = []
        for dep in spec.dependencies:
            name = str(dep)
            if name in earlier:
                dependencies.append(earlier[name])
            elif isinstance(dep, str) and dep in self._edits.tasks:
                dependencies.append(dep)
            else:
                raise TaskError(
                    f"task '{self.task_id}': delegated child '{key}' depends on '{name}', which is neither an "
                    "earlier child of this delegation nor a task of the job"
                )
        options = spec.options()
        del options["parent"]  # the running task
        options.update(dependencies=dependencies, task_id=child_id)
        self.add_task(spec.description if spec.description is not None else key, spec.agent, spec.input, **options)

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


def _few(keys: list[str], most: int = 5) -> str:
    """Up to ``most`` keys, and how many more."""
    shown = ", ".join(repr(key) for key in keys[:most])
    return shown if len(keys) <= most else f"{shown} and {len(keys) - most} more"


def _keyed(children: Mapping[str, Any] | Sequence[Any], values: list[Any]) -> Any:
    if isinstance(children, Mapping):
        return dict(zip(children, values, strict=True))
    return values


def _output_data(task: TaskRecord) -> dict[str, Any]:
    output = task.output
    return {} if output is None or output.data is None else dict(output.data)
