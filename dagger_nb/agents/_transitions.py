"""What happens to a task and the tasks around it when its state changes during a job run.

:class:`TaskTransitions` is the half of a job run that knows the task graph:
completing a task releases its dependents, failing one fails every task that
waits for it, a blocked task runs again once its new dependencies are done, a
failed attempt is retried while retries are left, an attempt's reported usage
counts against the job's token budget. It records every change of state in the
write-behind journal and queues the events to announce; :class:`JobRun` (the
other half, in ``_runner.py``) decides when to run, commit and announce.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dagger_nb.agents._attempt import Kind, Result
from dagger_nb.agents.events import (
    JobEvent,
    TaskAdded,
    TaskBlocked,
    TaskCompleted,
    TaskFailed,
    TaskRetrying,
    TaskStatusChanged,
)
from dagger_nb.agents.journal import AttemptJournal, Usage
from dagger_nb.agents.model import (
    BLOCKED,
    BROKEN,
    COMPLETED,
    DONE,
    FAILED,
    IN_PROGRESS,
    PENDING,
    TaskOutput,
    TaskRecord,
    TaskStatus,
    completed_output,
    utc_now,
)
from dagger_nb.agents.store import UNCHANGED, output_json
from dagger_nb.errors import TokenBudgetExceeded

if TYPE_CHECKING:
    from dagger_nb.agents._attempt import AttemptRunner
    from dagger_nb.agents._graph import TaskGraph
    from dagger_nb.agents.journal import Journal
    from dagger_nb.cache import Cache


class TaskTransitions:
    """The state of one job run's tasks and the rules that move them on."""

    # Slotted: a run has about forty attributes, more than a key-sharing instance dict holds,
    # and its hot paths read them constantly.
    __slots__ = (
        "_attempts", "_cache", "_dependents", "_graph", "_journal", "_journals", "_max_tokens", "_now",
        "_pending_events", "_ready", "_running", "_tasks", "_waiting", "allowed_agents", "cost", "job_id", "tokens",
    )

    def __init__(
        self,
        job_id: str,
        *,
        graph: TaskGraph,
        journal: Journal,
        attempts: AttemptRunner,
        cache: Cache,
        allowed_agents: frozenset[str] | None,
        max_tokens: int | None,
    ) -> None:
        self.job_id = job_id
        self.allowed_agents = allowed_agents
        #: the job's reported usage, every run counted (its tasks' totals, kept up to date)
        self.tokens = 0
        self.cost: float | None = None
        self._graph = graph
        self._tasks = graph.tasks
        self._dependents = graph.dependents
        self._journal = journal
        self._attempts = attempts
        self._cache = cache
        self._max_tokens = max_tokens
        self._ready: deque[str] = deque()
        self._running: set[str] = set()
        #: the journals of the attempts under way (see agents/journal.py)
        self._journals: dict[str, AttemptJournal] = {}
        #: tasks whose next attempt waits for the abandoned thread of an earlier one: the reason to
        #: show again once it returned
        self._waiting: dict[str, str] = {}
        self._pending_events: list[JobEvent] = []
        self._now: datetime | None = None  # the time of the changes of the round under way

    # -- what happened ---------------------------------------------------------------------

    def _announce(self, task: TaskRecord) -> None:
        self._pending_events.append(
            TaskAdded(
                self.job_id, task.task_id, task.description, task.agent, task.parent_task_id, tuple(task.dependencies)
            )
        )

    def _apply_change(self, task: TaskRecord, status: TaskStatus | None, reason: str | None) -> None:
        if status is not None:
            self._pending_events.append(self._status_event(task.task_id, status, reason))
        if task.task_id in self._running:
            return
        if task.status in DONE:
            self._release_dependents(task)
        elif task.status in BROKEN:
            self._cascade(task)
        else:
            self._reconsider(task)

    def _status_event(self, task_id: str, status: TaskStatus, reason: str | None) -> JobEvent:
        if status is BLOCKED:
            return TaskBlocked(self.job_id, task_id, reason or "")
        if status is FAILED:
            return TaskFailed(self.job_id, task_id, reason or "")
        if status is COMPLETED:
            output = self._tasks[task_id].output
            return TaskCompleted(self.job_id, task_id, output.data if output else None)
        return TaskStatusChanged(self.job_id, task_id, status, reason)

    def _apply_result(self, result: Result) -> None:
        self._running.discard(result.task_id)
        task = self._tasks[result.task_id]
        journal = self._journals.pop(result.task_id, None)
        added: list[str] | tuple[()] = ()
        over_budget: str | None = None
        if journal is not None:
            if journal.usage is not None:
                usage, journal.usage = journal.usage, None  # what it reports from now on is late
                over_budget = self._count_usage(task, usage)
            if over_budget is not None:  # nothing the attempt added is kept: it fails
                journal.discard(self._graph, self._journal)
            elif journal.added or journal.dependencies or journal.blocked is not None:
                added = self._adopt(task, journal)
            journal.closed = True
        try:
            if over_budget is not None:
                if task.status is IN_PROGRESS or task.status is BLOCKED:
                    self._fail(task, over_budget)
            else:
                self._apply_outcome(task, result)
        finally:
            for task_id in added:
                self._reconsider(self._tasks[task_id])

    def _count_usage(self, task: TaskRecord, usage: Usage) -> str | None:
        """Add an attempt's usage to its task and the job; the failure reason if it took the job's
        total past the budget."""
        usage.add_to(task)
        self._journal.mark(task)  # usage is in the whole row
        self.count_late_usage(usage)
        budget = self._max_tokens
        if budget is not None and usage.tokens and self.tokens > budget:
            return str(TokenBudgetExceeded(self.tokens, budget))
        return None

    def count_late_usage(self, usage: Usage) -> None:
        """Add usage to the job's totals (reported by an attempt, or after its attempt ended)."""
        self.tokens += usage.tokens
        if usage.cost is not None:
            self.cost = usage.cost if self.cost is None else self.cost + usage.cost

    def _adopt(self, task: TaskRecord, journal: AttemptJournal) -> list[str]:
        """Make what the ended attempt added part of the job: written in this round's transaction,
        with the attempt's outcome."""
        added = journal.commit(self._graph, self._journal)
        for task_id in added:
            self._announce(self._tasks[task_id])
        if journal.blocked is not None and task.status is IN_PROGRESS:
            self._set(task, BLOCKED, journal.blocked)
            self._pending_events.append(TaskBlocked(self.job_id, task.task_id, journal.blocked))
        return added

    def _apply_outcome(self, task: TaskRecord, result: Result) -> None:
        if task.status is BLOCKED:
            self._after_block(task, result.dependencies)
            return
        if task.status is not IN_PROGRESS:
            return  # someone else decided (terminated, set through the manager)
        if result.kind is Kind.OK:
            self._complete(task, result.value, result.stored_output, result.logs)
        elif result.kind is Kind.BLOCK:
            self._set(task, BLOCKED, result.value)
            self._pending_events.append(TaskBlocked(self.job_id, task.task_id, result.value))
            self._after_block(task, result.dependencies)
        elif result.kind is Kind.ERROR and task.retry_count < task.max_retries:
            task.retry_count += 1
            reason = f"attempt {task.retry_count} failed: {result.value}"
            if self._attempts.wait_for_thread(task):
                self._waiting[task.task_id] = reason
                reason += f"; attempt {task.retry_count + 1} waits for the abandoned thread of this one to return"
            self._set(task, PENDING, reason)
            self._pending_events.append(TaskRetrying(self.job_id, task.task_id, task.retry_count, result.value))
            self._reconsider(task)
        else:
            self._fail(task, result.value, result.traceback, result.logs)

    def _complete(
        self, task: TaskRecord, output: dict[str, Any], stored_output: str | None, logs: list[str] | None = None
    ) -> None:
        self._set(task, COMPLETED, None, output=completed_output(output, logs), stored_output=stored_output)
        self._cache.insert(task.task_id, "output", output)
        self._pending_events.append(TaskCompleted(
            self.job_id, task.task_id, output, timestamp=task.updated_at.timestamp()
        ))
        self._release_dependents(task)

    def _thread_returned(self, task: TaskRecord) -> None:
        reason = self._waiting.pop(task.task_id, None)
        if reason is not None and task.status is PENDING and task.task_id not in self._running:
            self._set(task, PENDING, reason)
            self._pending_events.append(TaskStatusChanged(self.job_id, task.task_id, PENDING, reason))
            self._reconsider(task)

    def _fail(
        self, task: TaskRecord, reason: str, traceback: str | None = None, logs: list[str] | None = None
    ) -> None:
        output = TaskOutput(success=False, error=reason, traceback=traceback, logs=logs)
        self._set(task, FAILED, reason, output=output)
        self._pending_events.append(TaskFailed(self.job_id, task.task_id, reason))
        self._cascade(task)

    def _after_block(self, task: TaskRecord, dependencies_at_start: list[str]) -> None:
        """A blocked task runs again once its dependencies are done (now, if they already are)."""
        tasks = self._tasks
        broken = next((dep for dep in task.dependencies if tasks[dep].status in BROKEN), None)
        if broken is not None:
            self._fail(task, f"dependency {broken} failed")
        elif task.dependencies is not dependencies_at_start and self._deps_done(task):
            self._unblock(task)

    def _unblock(self, task: TaskRecord) -> None:
        self._set(task, PENDING, "dependencies completed")
        self._pending_events.append(
            TaskStatusChanged(self.job_id, task.task_id, PENDING, "dependencies completed")
        )
        self._reconsider(task)

    # -- what can run ----------------------------------------------------------------------

    def _release_dependents(self, task: TaskRecord) -> None:
        tasks = self._tasks
        for dependent_id in self._dependents.get(task.task_id, ()):
            dependent = tasks[dependent_id]
            if dependent_id in self._running or dependent.status not in _WAITING:
                continue
            if not self._deps_done(dependent):
                continue
            if dependent.status is BLOCKED:
                self._unblock(dependent)
            elif self.allowed_agents is None or dependent.agent in self.allowed_agents:
                self._ready.append(dependent_id)  # pending, every dependency done: ready

    def _cascade(self, failed: TaskRecord) -> None:
        tasks = self._tasks
        stack = [failed]
        while stack:
            upstream = stack.pop()
            for dependent_id in self._dependents.get(upstream.task_id, ()):
                dependent = tasks[dependent_id]
                if dependent_id in self._running or dependent.status not in _WAITING:
                    continue
                reason = f"dependency {upstream.task_id} failed"
                self._set(dependent, FAILED, reason, output=TaskOutput(success=False, error=reason))
                self._pending_events.append(TaskFailed(self.job_id, dependent_id, reason))
                stack.append(dependent)

    def _reconsider(self, task: TaskRecord) -> None:
        """Queue ``task`` if it can run, or fail it if a dependency failed."""
        if task.task_id in self._running or task.status not in _WAITING or task.task_id in self._waiting:
            return
        tasks = self._tasks
        broken = next((dep for dep in task.dependencies if tasks[dep].status in BROKEN), None)
        if broken is not None:
            self._fail(task, f"dependency {broken} failed")
        elif task.status is PENDING and self._runnable(task):
            self._ready.append(task.task_id)

    def _initial_scan(self) -> None:
        tasks = self._tasks
        self.tokens, self.cost = self._graph.usage(self.job_id)
        for task_id in list(self._graph.jobs[self.job_id]):
            self._reconsider(tasks[task_id])

    def _deps_done(self, task: TaskRecord) -> bool:
        # a loop, not all() over a generator: called for every task at least twice
        tasks = self._tasks
        for dep in task.dependencies:  # noqa: SIM110
            if tasks[dep].status not in DONE:
                return False
        return True

    def _runnable(self, task: TaskRecord) -> bool:
        if self.allowed_agents is not None and task.agent not in self.allowed_agents:
            return False
        return self._deps_done(task)

    def _set(
        self,
        task: TaskRecord,
        status: TaskStatus,
        reason: str | None,
        *,
        output: TaskOutput | None = None,
        stored_output: str | None = None,
    ) -> None:
        """Change the task's state (and its ``output``, whose JSON is ``stored_output`` when
        known already); only the state columns are written."""
        task.status = status
        task.status_reason = reason
        task.updated_at = self._now or utc_now()
        if output is not None:
            task.output = output
        journal = self._journal
        if journal.store is not None:
            if output is not None and stored_output is None:
                stored_output = output_json(output)
            journal.state_changed(task, UNCHANGED if stored_output is None else stored_output)


_WAITING = frozenset({PENDING, BLOCKED})
