"""The changes made to a manager's tasks through its methods or a running agent's context.

A change to a running job runs on that job's loop thread (a sync agent calls
from a worker thread, and the run's :class:`~dagger_nb._loop.LoopHop` carries
the call over), so the job run sees it between two of its rounds; each run has
its own hop, as two jobs may run on two loops. A change to a job that does not
run is made where it is called. A change made by a running
attempt (``journal`` given) joins that attempt and is applied when it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from dagger_nb._traceback import printable
from dagger_nb.agents.journal import AttemptJournal, Usage
from dagger_nb.agents.model import TaskRecord, TaskStatus
from dagger_nb.agents.spec import new_record
from dagger_nb.errors import DependencyCycleError, TaskError

if TYPE_CHECKING:
    from collections.abc import Callable

    from dagger_nb.agents._graph import TaskGraph
    from dagger_nb.agents._runner import JobRun
    from dagger_nb.agents.journal import Journal
    from dagger_nb.agents.manager import TaskManager

T = TypeVar("T")


class TaskEdits:
    """Adds tasks and dependencies, sets statuses and counts usage for one :class:`TaskManager`.

    ``manager`` is read for its ``registry`` only; ``runs`` is the manager's
    job id -> running :class:`JobRun`, told about every change to its job.
    """

    __slots__ = ("_graph", "_journal", "_manager", "_runs")

    def __init__(self, manager: TaskManager, graph: TaskGraph, journal: Journal, runs: dict[str, JobRun]) -> None:
        self._manager = manager
        self._graph = graph
        self._journal = journal
        self._runs = runs

    @property
    def tasks(self) -> Mapping[str, TaskRecord]:
        """Every task of the manager by id (read-only: change them through the methods here)."""
        return self._graph.tasks

    def add_task(
        self,
        job_id: str,
        description: str,
        agent: str,
        input: dict[str, Any] | None,
        options: dict[str, Any],
        journal: AttemptJournal | None = None,
    ) -> str:
        """Add a task (see :meth:`TaskManager.add_task`); returns its id."""
        return self._on_job_loop(job_id, self._add_task, job_id, description, agent, input, options, journal)

    def add_dependency(self, task_id: str, depends_on: str, journal: AttemptJournal | None = None) -> None:
        """Make ``task_id`` wait for ``depends_on`` (see :meth:`TaskManager.add_dependency`)."""
        self._on_job_loop(self._job_of(task_id), self._add_dependency, task_id, depends_on, journal)

    def update_task_status(self, task_id: str, status: TaskStatus | str, reason: str | None) -> None:
        """Set a task's status (see :meth:`TaskManager.update_task_status`)."""
        self._on_job_loop(self._job_of(task_id), self._update_task_status, task_id, status, reason)

    def record_usage(self, journal: AttemptJournal, tokens: int, cost: float | None, model: str | None) -> None:
        """Count usage an agent reported (see :meth:`TaskContext.record_usage`)."""
        self._on_job_loop(self._job_of(journal.task_id), self._record_usage, journal, tokens, cost, model)

    def _job_of(self, task_id: str) -> str | None:
        task = self._graph.tasks.get(task_id)
        return None if task is None else task.job_id

    def _on_job_loop(self, job_id: str | None, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the loop of the running job ``job_id``; here when that job does not run
        (an unknown task or job is then reported by ``fn`` itself)."""
        run = None if job_id is None else self._runs.get(job_id)
        if run is None:
            return fn(*args)
        return run.hop.call(fn, *args)

    def _add_task(
        self,
        job_id: str,
        description: str,
        agent: str,
        input: dict[str, Any] | None,
        options: dict[str, Any],
        journal: AttemptJournal | None,
    ) -> str:
        """Add a task with ``options`` (checked names of :class:`TaskSpec` fields). With ``journal``
        (an attempt's), the task exists in the graph but is linked, and written, only when the
        attempt ends (see :mod:`dagger_nb.agents.journal`)."""
        if journal is None:
            self._journal.check()
        graph = self._graph
        task = new_record(self._manager.registry, graph, job_id, description, agent, input, options)
        seq = graph.next_seq
        store = self._journal.store
        if store is not None:
            try:
                store.encode(seq, task)  # fails here, before the task exists, if not JSON-able
            except ValueError as error:
                raise TaskError(printable(
                    f"cannot add task '{task.task_id}' to job '{job_id}': input cannot be stored as JSON: {error}"
                )) from None
        if journal is not None:
            journal.check_open()
            graph.insert(task, seq, linked=False)
            journal.added.append(task.task_id)
            return task.task_id
        if store is not None:
            self._journal.tasks[task.task_id] = task
        graph.insert(task, seq)
        run = self._runs.get(job_id)
        if run is not None:
            run.note_added(task.task_id)
        else:
            self._journal.flush_soon()
        return task.task_id

    def _add_dependency(self, task_id: str, depends_on: str, journal: AttemptJournal | None) -> None:
        if journal is None:
            self._journal.check()
        graph = self._graph
        task = graph.require(task_id)
        upstream = graph.require(depends_on)
        if task_id == depends_on:
            raise TaskError(f"task '{task_id}' cannot depend on itself")
        if upstream.job_id != task.job_id:
            raise TaskError(
                f"task '{task_id}' (job '{task.job_id}') cannot depend on '{depends_on}' of job '{upstream.job_id}'"
            )
        if depends_on in task.dependencies:
            return
        path = graph.path(depends_on, task_id)
        if path is not None:
            raise DependencyCycleError([task_id, *path])
        if journal is None:  # the running task's own agent, through the manager: part of its attempt
            run = self._runs.get(task.job_id)
            journal = None if run is None else run.journal_of(task_id)
        if journal is not None and journal.task_id == task_id:
            journal.check_open()
            if not journal.depends_on(depends_on):
                journal.dependencies.append(depends_on)
            return
        graph.add_dependency(task, depends_on)
        self._journal.touch(task)
        self._changed(task, None, None)

    def _update_task_status(self, task_id: str, status: TaskStatus | str, reason: str | None) -> None:
        self._journal.check()
        task = self._graph.require(task_id)
        try:
            status = TaskStatus(status)
        except ValueError:
            known = ", ".join(member.value for member in TaskStatus)
            raise TaskError(f"unknown task status {status!r} (known: {known})") from None
        if reason is not None:
            reason = printable(str(reason))  # stored and shown: a lone surrogate would fail both
        run = self._runs.get(task.job_id)
        journal = None if run is None else run.journal_of(task_id)
        if journal is not None and status is TaskStatus.BLOCKED:
            journal.blocked = reason or "blocked by its agent"  # parks it when the attempt ends
            return
        task.status = status
        task.status_reason = reason
        self._journal.touch(task)
        self._changed(task, status, reason)

    def _record_usage(
        self, journal: AttemptJournal, tokens: int, cost: float | None, model: str | None
    ) -> None:
        """Count usage an agent reported: with its attempt's outcome while the attempt runs; after
        it ended (an abandoned thread), in the task's and the running job's totals at once."""
        if not journal.closed:
            if journal.usage is None:
                journal.usage = Usage()
            journal.usage.add(tokens, cost, model)
            return
        task = self._graph.tasks.get(journal.task_id)
        if task is not None:
            usage = Usage()
            usage.add(tokens, cost, model)
            usage.add_to(task)
            self._journal.touch(task)
            run = self._runs.get(task.job_id)
            if run is not None:
                run.count_late_usage(usage)
            self._changed(task, None, None)

    def _changed(self, task: TaskRecord, status: TaskStatus | None, reason: str | None) -> None:
        run = self._runs.get(task.job_id)
        if run is not None:
            run.note_changed(task.task_id, status, reason)
        else:
            self._journal.flush_soon()
