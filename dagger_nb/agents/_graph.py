"""The tasks a :class:`TaskManager` holds, as a graph: indexes, insertion, dependency paths, checks.

The manager builds one :class:`TaskGraph` and hands it to every job run: the
runner reads and changes tasks through it, never through the manager.
"""

from __future__ import annotations

from typing import Any

from dagger_nb.agents.model import DONE, JobStatus, TaskRecord
from dagger_nb.errors import JobNotFound, TaskError, TaskNotFound


class TaskGraph:
    """Every task by id, in creation order per job, with the reverse of the dependency links.

    The attributes are plain dicts that the runner reads on its hot paths.
    """

    __slots__ = ("dependents", "job_status", "jobs", "next_seq", "seq", "tasks")

    def __init__(self) -> None:
        #: task id -> its live record
        self.tasks: dict[str, TaskRecord] = {}
        #: task id -> its creation number (its row in the database)
        self.seq: dict[str, int] = {}
        self.next_seq = 0
        #: job id -> its task ids, in creation order
        self.jobs: dict[str, list[str]] = {}
        #: task id -> the tasks that depend on it (finishing it may release them)
        self.dependents: dict[str, list[str]] = {}
        #: job id -> the status of its last run
        self.job_status: dict[str, JobStatus] = {}

    def insert(self, task: TaskRecord, seq: int, *, linked: bool = True) -> None:
        """Add ``task`` as creation number ``seq``; unless ``linked`` is false (a task of an
        attempt under way), its dependencies learn about it."""
        self.tasks[task.task_id] = task
        self.seq[task.task_id] = seq
        if seq >= self.next_seq:
            self.next_seq = seq + 1
        self.jobs.setdefault(task.job_id, []).append(task.task_id)
        if linked:
            self.link(task)

    def link(self, task: TaskRecord) -> None:
        """Make ``task`` one of its dependencies' dependents (so finishing them releases it)."""
        for dep in task.dependencies:
            self.dependents.setdefault(dep, []).append(task.task_id)

    def add_dependency(self, task: TaskRecord, depends_on: str) -> None:
        """Make ``task`` wait for ``depends_on`` (checked already)."""
        task.dependencies = [*task.dependencies, depends_on]
        self.dependents.setdefault(depends_on, []).append(task.task_id)

    def forget(self, task_id: str) -> None:
        """Remove an unlinked task (of an attempt that will not end)."""
        task = self.tasks.pop(task_id)
        del self.seq[task_id]
        self.jobs[task.job_id].remove(task_id)

    def require(self, task_id: str) -> TaskRecord:
        """The task ``task_id``; :class:`TaskNotFound` if there is none."""
        task = self.tasks.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def require_job(self, job_id: str) -> list[str]:
        """The ids of the tasks of ``job_id``; :class:`JobNotFound` listing the jobs if there is none."""
        ids = self.jobs.get(job_id)
        if ids is None:
            raise JobNotFound(job_id, self.jobs)
        return ids

    def job_tasks(self, job_id: str) -> list[TaskRecord]:
        """The tasks of ``job_id`` in creation order (:class:`JobNotFound` if there is none)."""
        tasks = self.tasks
        return [tasks[task_id] for task_id in self.require_job(job_id)]

    def usage(self, job_id: str) -> tuple[int, float | None]:
        """The tokens and cost the tasks of ``job_id`` reported, every run counted."""
        tokens, cost = 0, None
        for task in self.job_tasks(job_id):
            tokens += task.tokens
            if task.cost is not None:
                cost = task.cost if cost is None else cost + task.cost
        return tokens, cost

    def dependency_outputs(self, task_id: str) -> list[dict[str, Any]]:
        """The output data of ``task_id``'s dependencies, in dependency order
        (:class:`TaskError` naming every dependency that is not completed)."""
        tasks = self.tasks
        outputs: list[dict[str, Any]] = []
        missing: list[str] = []
        for dep in self.require(task_id).dependencies:
            upstream = tasks[dep]
            if upstream.status not in DONE:
                missing.append(f"'{dep}' ({upstream.status})")
            else:
                outputs.append(dict(upstream.output.data or {}) if upstream.output else {})
        if missing:
            raise TaskError(f"task '{task_id}': dependencies not completed: {', '.join(missing)}")
        return outputs

    def problems(self, job_id: str, task_id: str, dependencies: tuple[str, ...], parent: str | None) -> list[str]:
        """Every reason why ``task_id`` cannot be added to ``job_id`` with these links."""
        tasks = self.tasks
        problems = []
        if not task_id:
            problems.append("task id must not be empty")
        elif task_id in tasks:
            problems.append(f"task id '{task_id}' already exists (in job '{tasks[task_id].job_id}')")
        for dep in dependencies:
            if dep == task_id:
                problems.append(f"task '{task_id}' cannot depend on itself")
            elif dep not in tasks:
                problems.append(f"unknown dependency '{dep}'")
            elif tasks[dep].job_id != job_id:
                problems.append(f"dependency '{dep}' belongs to another job ('{tasks[dep].job_id}')")
        if parent is not None and parent not in tasks:
            problems.append(f"unknown parent task '{parent}'")
        return problems

    def path(self, start: str, goal: str) -> list[str] | None:
        """A dependency path ``start -> ... -> goal``, if ``start`` (transitively) depends on ``goal``."""
        tasks = self.tasks
        parents: dict[str, str | None] = {start: None}
        stack = [start]
        while stack:
            current = stack.pop()
            if current == goal:
                path = [current]
                while (previous := parents[path[-1]]) is not None:
                    path.append(previous)
                return path[::-1]
            for dep in tasks[current].dependencies:
                if dep not in parents:
                    parents[dep] = current
                    stack.append(dep)
        return None
