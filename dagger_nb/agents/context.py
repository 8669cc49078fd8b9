"""What an agent receives besides its input: :class:`TaskContext`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagger_nb.agents.model import Task, TaskRecord, TaskType, snapshot

if TYPE_CHECKING:
    from dagger_nb.agents.manager import TaskManager

_CURRENT: Any = object()


class TaskContext:
    """The running task's view of its job: its snapshot, its dependencies' outputs, new work.

    Safe to use from sync agents too (they run in a worker thread; the calls
    that change the job are carried over to the event loop).
    """

    __slots__ = ("_live", "attempt", "job_id", "manager", "task_id")

    def __init__(self, manager: TaskManager, task: TaskRecord, *, attempt: int) -> None:
        self.manager = manager
        self._live = task
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
        """:meth:`TaskManager.add_task` in this job; ``parent`` defaults to the running task."""
        return self.manager.add_task(
            self.job_id,
            description,
            agent,
            input,
            dependencies=dependencies,
            parent=self.task_id if parent is _CURRENT else parent,
            task_type=task_type,
            task_id=task_id,
            timeout=timeout,
            max_retries=max_retries,
            acceptance_criteria=acceptance_criteria,
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
        self.manager.add_dependency(self.task_id, child)
        return child

    def __repr__(self) -> str:
        return f"<TaskContext task={self.task_id!r} job={self.job_id!r} attempt={self.attempt}>"
