"""Handles on running jobs, their reports, and what to do when a job stalls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from dagger_nb.agents._report import report_html, tasks_to_frame
from dagger_nb.agents.events import JobEvent
from dagger_nb.agents.model import DONE, JobStatus, Task, TaskStatus, TaskType, task_from_values
from dagger_nb.errors import describe_error
from dagger_nb.events import EventStream

if TYPE_CHECKING:
    import os

    import pandas as pd

    from dagger_nb.agents._runner import JobRun
    from dagger_nb.agents.journal import Usage


class StallAction(StrEnum):
    """What a job does when no task changed for the heartbeat interval.

    ``TaskManager(stall_action=...)`` also takes a callable, called with the job id.
    """

    TERMINATE_JOB = "terminate_job"
    NOTIFY_PLANNING_AGENT = "notify_planning_agent"


#: The agent :attr:`StallAction.NOTIFY_PLANNING_AGENT` gives a task to, when it is registered.
PLANNING_AGENT = "planning_agent"

StallHandler = StallAction | Callable[[str], Any]


class TaskOutcomes(Mapping[str, Task]):
    """Task id → the :class:`Task` as it was when the job ended (:attr:`JobReport.outcomes`).

    The runner keeps each task's field values at the end of the job, one C call per
    task, and a task's :class:`Task` is made when it is first read (then kept): a
    validated model instance costs much more than keeping the values, and whoever
    ran the job may read only its status or a few of its tasks.
    """

    __slots__ = ("_tasks", "_values")

    def __init__(self, values: dict[str, tuple[Any, ...]]) -> None:
        self._values = values
        self._tasks: dict[str, Task] = {}

    def __getitem__(self, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            task = self._tasks[task_id] = task_from_values(self._values[task_id])
        return task

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._values  # without making the Task

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return repr(dict(self))


class JobUsage(NamedTuple):
    """A job's reported usage, every run counted (:meth:`TaskManager.job_usage`)."""

    tokens: int
    cost: float | None


@dataclass(slots=True)
class JobReport:
    """How a job run ended: its ``status``, every task as it was at the end, and the usage its
    agents reported (``tokens``, ``cost``: the job's totals, every run counted; each task's own
    are on its :class:`Task`)."""

    job_id: str
    status: JobStatus
    outcomes: Mapping[str, Task] = field(default_factory=dict)
    #: when the run started and ended, in seconds since the epoch (UTC), as a DAG run's and a
    #: pub/sub report's times are
    started_at: float = field(default_factory=time.time)
    finished_at: float = field(default_factory=time.time)
    tokens: int = 0
    cost: float | None = None
    #: Why the job failed as a whole (a storage failure), as text; None otherwise. Failures of
    #: agents are on their tasks instead.
    error: str | None = None

    @property
    def success(self) -> bool:
        """True when the job completed."""
        return self.status is JobStatus.COMPLETED

    def counts(self) -> dict[TaskStatus, int]:
        """Number of tasks per status."""
        counts: dict[TaskStatus, int] = {}
        for task in self.outcomes.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        return counts

    def failed(self) -> dict[str, str | None]:
        """Task id → reason, for every task that did not complete."""
        return {tid: task.status_reason for tid, task in self.outcomes.items() if task.status not in DONE}

    @property
    def objective(self) -> Task | None:
        """The job's first ``OBJECTIVE`` task as it ended, or None."""
        return next((task for task in self.outcomes.values() if task.task_type is TaskType.OBJECTIVE), None)

    @property
    def result(self) -> dict[str, Any] | None:
        """The objective's output data: what the job produced (None unless the objective completed)."""
        objective = self.objective
        if objective is None or objective.status not in DONE or objective.output is None:
            return None
        return objective.output.data

    def to_frame(self) -> pd.DataFrame:
        """One row per task, the same flat columns as :meth:`TaskManager.tasks_frame`."""
        return tasks_to_frame(list(self.outcomes.values()))

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """A self-contained HTML page of the job (tasks, graph, errors with their tracebacks); written
        to ``path`` when given. Returns the page."""
        from dagger_nb.export import job_report_to_html

        return job_report_to_html(self, path)

    def to_json(self) -> str:
        """The job and every task (output, error, traceback) as JSON text."""
        from dagger_nb.export import job_report_to_json

        return job_report_to_json(self)

    def __repr__(self) -> str:
        counts = ", ".join(f"{status}={count}" for status, count in self.counts().items())
        usage = f", {self.tokens} tokens" if self.tokens else ""
        error = f": {self.error}" if self.error is not None else ""
        return f"<JobReport {self.job_id!r} {self.status} ({counts}{usage}){error}>"

    def _repr_html_(self) -> str:
        return report_html(self)


class JobHandle:
    """A job started with :meth:`TaskManager.start`: watch it, wait for it, cancel it.

    ``await handle`` is the same as ``await handle.wait()``. It satisfies
    :class:`dagger_nb.handles.Handle`, as the DAG's and pub/sub's handles do.
    """

    def __init__(self, job_id: str, run: JobRun) -> None:
        self.job_id = job_id
        #: The error that ended the job as a whole (a storage failure), else None; failures of
        #: agents are recorded on their tasks instead.
        self.error: BaseException | None = None
        self.events: EventStream[JobEvent] = run.events
        self._run = run
        self._waited_callbacks: list[Callable[[], object]] = []

    @property
    def report(self) -> JobReport | None:
        """The report, once the job ended."""
        return self._run.report

    @property
    def status(self) -> JobStatus:
        """``RUNNING`` until the job ends, then its final status."""
        return JobStatus.RUNNING if self.report is None else self.report.status

    @property
    def done(self) -> bool:
        """True once the job ended."""
        return self._run.report is not None

    async def wait(self) -> JobReport:
        """Wait for the job to end and return its report. A job that failed as a whole (a storage
        failure) returns a ``FAILED`` report whose ``error`` says why; :attr:`error` holds the
        exception."""
        await self._run.wait_finished()
        assert self.report is not None
        for callback in self._waited_callbacks:
            callback()
        return self.report

    def add_waited_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` in the waiting task each time :meth:`wait` returns (as
        :meth:`dagger_nb.RunHandle.add_waited_callback`: dashboards re-send their final state)."""
        self._waited_callbacks.append(callback)

    def cancel(self) -> None:
        """End the job ``CANCELLED`` (from any thread): running agents are cancelled, unstarted
        tasks stay pending."""
        self._run.cancel()

    def running_usage(self, task_id: str) -> Usage | None:
        """What the running attempt of ``task_id`` reported so far (``ctx.record_usage``), or None when
        no attempt of it runs or it reported nothing yet (an attempt's usage joins its task when it ends)."""
        journal = self._run.journal_of(task_id)
        return None if journal is None else journal.usage

    def subscribe(self) -> AsyncIterator[JobEvent]:
        """Every event of this job, past ones first, until it finished."""
        return self.events.subscribe()

    def add_listener(self, listener: Callable[[JobEvent], object]) -> None:
        """Call ``listener(event)`` synchronously for each future event of the job."""
        self.events.add_listener(listener)

    def __await__(self) -> Generator[Any, None, JobReport]:
        return self.wait().__await__()

    async def _execute(self) -> None:
        try:
            await self._run.run()
        except Exception as error:  # the report exists all the same: the run ended FAILED
            self._failed(error)

    def _dropped(self) -> None:
        """The manager closed before the job could start: it ends cancelled, having run nothing."""
        try:
            self._run.drop()
        except Exception as error:  # the journal could not record the end
            self._failed(error)

    def _failed(self, error: Exception) -> None:
        self.error = error
        report = self._run.report
        if report is not None:
            report.error = describe_error(error)

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id!r} {self.status}>"
