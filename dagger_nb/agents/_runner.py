"""The scheduler of one job run: a ready queue, a few long-lived workers, group commits.

One loop owns every state change. Each round it applies what happened since
the last one (attempt results, tasks added, statuses set through the manager),
picks the ready tasks to start, writes every changed task in **one** SQLite
transaction, and only then emits the events and hands the started tasks to
the workers. So a change is durable before anything acts on it, and a busy job
pays one commit per round rather than one per change. Workers are
``max_parallel_tasks`` long-lived tasks, each handed one task id at a time
through its own event: starting one anyio task per task would cost more than
running a trivial agent (and a shared memory stream costs 3x more per hand-off
than a per-worker event once several workers wait on it).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from dagger_nb.agents._attempt import Kind, Result, run_attempt
from dagger_nb.agents.events import (
    JobEvent,
    JobFinished,
    JobStalled,
    TaskAdded,
    TaskBlocked,
    TaskCompleted,
    TaskFailed,
    TaskRetrying,
    TaskStarted,
    TaskStatusChanged,
)
from dagger_nb.agents.job import PLANNING_AGENT, JobReport, StallAction, TaskOutcomes
from dagger_nb.agents.journal import AttemptJournal
from dagger_nb.agents.model import (
    BLOCKED,
    BROKEN,
    COMPLETED,
    DONE,
    FAILED,
    IN_PROGRESS,
    PENDING,
    JobStatus,
    TaskOutput,
    TaskRecord,
    TaskStatus,
    completed_output,
    field_values,
    utc_now,
)
from dagger_nb.agents.store import UNCHANGED, output_json
from dagger_nb.events import EventStream

if TYPE_CHECKING:
    from dagger_nb.agents.manager import TaskManager

TERMINATED = "Job terminated due to inactivity"
CANCELLED_WHILE_RUNNING = "job cancelled while the task was running"


class _Worker:
    """A long-lived worker's mailbox: the scheduler hands it one task id at a time."""

    __slots__ = ("_arrived", "_new_event", "_task_id")

    def __init__(self, new_event: Callable[[], anyio.Event]) -> None:
        self._new_event = new_event
        self._arrived = new_event()
        self._task_id = ""

    def hand(self, task_id: str) -> None:
        self._task_id = task_id
        self._arrived.set()

    async def next(self) -> str:
        await self._arrived.wait()
        self._arrived = self._new_event()
        return self._task_id


class JobRun:
    """Runs one job once; :class:`JobHandle` wraps it for callers."""

    def __init__(self, manager: TaskManager, job_id: str, *, allowed_agents: frozenset[str] | None) -> None:
        self.manager = manager
        self.job_id = job_id
        self.allowed_agents = allowed_agents
        self.events: EventStream[JobEvent] = EventStream()
        self.report: JobReport | None = None
        self.started_at = utc_now()
        self._ready: deque[str] = deque()
        self._running: set[str] = set()
        self._idle: list[_Worker] = []
        self._results: list[Result] = []
        #: the journals of the attempts under way (see agents/journal.py)
        self._journals: dict[str, AttemptJournal] = {}
        #: tasks whose next attempt waits for the abandoned thread of a timed-out one: their reason
        self._waiting: dict[str, str] = {}
        self._returned: list[str] = []
        self._added: list[str] = []
        self._changed: list[tuple[str, TaskStatus | None, str | None]] = []
        self._pending_events: list[JobEvent] = []
        self._now: datetime | None = None  # the time of the changes of the round under way
        self._wake: anyio.Event | None = None
        self._new_event: Callable[[], anyio.Event] = anyio.Event
        self._change_waiter: anyio.Event | None = None
        self._last_change = 0.0
        self._watched = manager.heartbeat_interval is not None
        self._terminated = False
        self._cancel_requested = False
        self._scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None

    # -- notifications from the manager (on the loop's thread) -------------------------------

    def note_added(self, task_id: str) -> None:
        """A task was added to this job; it is written and announced in the next round."""
        self._added.append(task_id)
        self._wakeup()

    def note_changed(self, task_id: str, status: TaskStatus | None, reason: str | None = None) -> None:
        """A task's status (or, with ``status=None``, its dependencies) changed through the manager."""
        self._changed.append((task_id, status, reason))
        self._wakeup()

    def journal_of(self, task_id: str) -> AttemptJournal | None:
        """The journal of the running attempt of ``task_id``, if one runs."""
        return self._journals.get(task_id)

    def note_thread_returned(self, task_id: str) -> None:
        """The abandoned thread of a timed-out attempt of ``task_id`` has returned."""
        self._returned.append(task_id)
        self._wakeup()

    async def wait_finished(self) -> None:
        """Wait until the run has ended (its report exists)."""
        if self.report is None:
            if self._finished is None:
                self._finished = anyio.Event()
            await self._finished.wait()

    def cancel(self) -> None:
        """Cancel the run; unstarted tasks stay pending."""
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()

    def _wakeup(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> JobReport:
        """Run the job until nothing is left to do, then return its report."""
        manager = self.manager
        manager._enter_loop()
        try:
            with anyio.CancelScope() as self._scope:
                if self._cancel_requested:
                    self._scope.cancel()
                status = await self._main()
            if self._scope.cancel_called:
                status = JobStatus.CANCELLED
        except anyio.get_cancelled_exc_class():
            self._finish(JobStatus.CANCELLED)
            raise
        except BaseException:
            self._finish(JobStatus.FAILED)
            raise
        finally:
            manager._leave_loop()
        return self._finish(status)

    async def _main(self) -> JobStatus:
        # The running backend's event class, called directly: anyio.Event() looks the
        # backend up on every call, and a run makes one or two events per task.
        self._new_event = type(anyio.Event())
        self._wake = self._new_event()
        self._last_change = anyio.current_time()
        self.manager._set_job_status(self.job_id, JobStatus.RUNNING)
        self._initial_scan()
        async with anyio.create_task_group() as group:
            for _ in range(self.manager.max_parallel_tasks):
                worker = _Worker(self._new_event)
                self._idle.append(worker)
                group.start_soon(self._worker, worker)
            if self.manager.heartbeat_interval is not None:
                group.start_soon(self._watch)
            await self._schedule()
            group.cancel_scope.cancel()
        if self._terminated:
            return JobStatus.FAILED
        tasks = self.manager._tasks
        return (
            JobStatus.COMPLETED
            if all(tasks[tid].status in DONE for tid in self.manager._jobs[self.job_id])
            else JobStatus.FAILED
        )

    async def _schedule(self) -> None:
        while True:
            for task_id in self._round():
                self._idle.pop().hand(task_id)
            if self._terminated or not (self._running or self._has_news() or self._waiting):
                return
            if not self._has_news():
                assert self._wake is not None
                await self._wake.wait()
                self._wake = self._new_event()

    def _has_news(self) -> bool:
        return bool(self._results or self._added or self._changed or self._pending_events or self._returned)

    def _round(self) -> list[str]:
        """Apply news, start ready tasks, commit, then announce; returns the tasks to start."""
        # One clock read for every change of the round: they are committed together anyway.
        self._now = utc_now()
        try:
            changed = self._apply()
            starts = self._dispatch()
        finally:
            self._now = None
        if (changed or starts) and self._watched:
            self._last_change = anyio.current_time()
            if self._change_waiter is not None:
                self._change_waiter.set()
        self.manager._flush()
        self._emit_pending()
        return starts

    def _emit_pending(self) -> None:
        if self._pending_events:
            events, self._pending_events = self._pending_events, []
            self.events.emit_many(events)

    def _finish(self, status: JobStatus) -> JobReport:
        manager = self.manager
        for journal in self._journals.values():  # attempts that will not end leave nothing
            journal.discard(manager)
        self._journals.clear()
        if status is JobStatus.CANCELLED:
            for task_id in self._running:
                task = manager._tasks[task_id]
                if task.status is IN_PROGRESS:
                    self._set(task, PENDING, CANCELLED_WHILE_RUNNING)
                    self._pending_events.append(
                        TaskStatusChanged(self.job_id, task_id, PENDING, CANCELLED_WHILE_RUNNING)
                    )
        manager._set_job_status(self.job_id, status)
        manager._runs.pop(self.job_id, None)
        try:
            manager._flush()
        except BaseException:
            self._pending_events.clear()  # a change that could not be written is never announced
            raise
        finally:
            self._emit_pending()
            self.events.emit(JobFinished(self.job_id, status))
            self.events.close()
            tasks = manager._tasks
            outcomes = TaskOutcomes({tid: field_values(tasks[tid]) for tid in manager._jobs[self.job_id]})
            self.report = JobReport(self.job_id, status, outcomes, self.started_at, utc_now())
            if self._finished is not None:
                self._finished.set()
        return self.report

    # -- workers --------------------------------------------------------------------------

    async def _worker(self, worker: _Worker) -> None:
        while True:
            task_id = await worker.next()
            inline = 0
            while True:
                journal = self._journals[task_id] = AttemptJournal(task_id)
                result = await run_attempt(self.manager, task_id, journal)
                self._results.append(result)  # not before the await: _apply swaps the list
                if len(self._running) > 1 or self._terminated:
                    break  # the scheduler batches the results of parallel tasks
                # The only running task (a chain): schedule here and run the next task on this
                # worker, saving two hand-offs per task. A checkpoint now and then keeps the
                # loop fair when the agents never await anything.
                starts = self._round()
                if not starts:
                    break
                retry = starts[0] == task_id
                task_id = starts[0]
                for other in starts[1:]:
                    self._idle.pop().hand(other)
                inline += 1
                if retry or inline % _FAIRNESS == 0:  # a retry always lets cancellation in
                    await anyio.lowlevel.checkpoint()
            self._idle.append(worker)
            self._wakeup()

    # -- applying news --------------------------------------------------------------------

    def _apply(self) -> bool:
        changed = False
        if self._added:
            added, self._added = self._added, []
            for task_id in added:
                self._announce(self.manager._tasks[task_id])
                self._reconsider(self.manager._tasks[task_id])
            changed = True
        if self._changed:
            notes, self._changed = self._changed, []
            for task_id, status, reason in notes:
                self._apply_change(self.manager._tasks[task_id], status, reason)
            changed = True
        if self._results:
            results, self._results = self._results, []
            for result in results:
                self._apply_result(result)
            changed = True
        if self._returned:
            returned, self._returned = self._returned, []
            for task_id in returned:
                self._thread_returned(self.manager._tasks[task_id])
            changed = True
        return changed

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
            output = self.manager._tasks[task_id].output
            return TaskCompleted(self.job_id, task_id, output.data if output else None)
        return TaskStatusChanged(self.job_id, task_id, status, reason)

    def _apply_result(self, result: Result) -> None:
        self._running.discard(result.task_id)
        task = self.manager._tasks[result.task_id]
        journal = self._journals.pop(result.task_id, None)
        added: list[str] | tuple[()] = ()
        if journal is not None:
            if journal.added or journal.dependencies or journal.blocked is not None:
                added = self._adopt(task, journal)
            journal.closed = True
        try:
            self._apply_outcome(task, result)
        finally:
            for task_id in added:
                self._reconsider(self.manager._tasks[task_id])

    def _adopt(self, task: TaskRecord, journal: AttemptJournal) -> list[str]:
        """Make what the ended attempt added part of the job: written in this round's transaction,
        with the attempt's outcome."""
        added = journal.commit(self.manager)
        for task_id in added:
            self._announce(self.manager._tasks[task_id])
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
            self._complete(task, result.value, result.stored_output)
        elif result.kind is Kind.BLOCK:
            self._set(task, BLOCKED, result.value)
            self._pending_events.append(TaskBlocked(self.job_id, task.task_id, result.value))
            self._after_block(task, result.dependencies)
        elif result.kind is Kind.ERROR and task.retry_count < task.max_retries:
            task.retry_count += 1
            reason = f"attempt {task.retry_count} failed: {result.value}"
            if task.task_id in self.manager._abandoned:
                self._waiting[task.task_id] = reason
                reason += f"; attempt {task.retry_count + 1} waits for the abandoned thread of this one to return"
            self._set(task, PENDING, reason)
            self._pending_events.append(TaskRetrying(self.job_id, task.task_id, task.retry_count, result.value))
            self._reconsider(task)
        else:
            self._fail(task, result.value)

    def _complete(self, task: TaskRecord, output: dict[str, Any], stored_output: str | None) -> None:
        self._set(task, COMPLETED, None, output=completed_output(output), stored_output=stored_output)
        self.manager.cache.insert(task.task_id, "output", output)
        self._pending_events.append(TaskCompleted(self.job_id, task.task_id, output, timestamp=task.updated_at))
        self._release_dependents(task)

    def _thread_returned(self, task: TaskRecord) -> None:
        reason = self._waiting.pop(task.task_id, None)
        if reason is not None and task.status is PENDING and task.task_id not in self._running:
            self._set(task, PENDING, reason)
            self._pending_events.append(TaskStatusChanged(self.job_id, task.task_id, PENDING, reason))
            self._reconsider(task)

    def _fail(self, task: TaskRecord, reason: str) -> None:
        self._set(task, FAILED, reason, output=TaskOutput(success=False, error=reason))
        self._pending_events.append(TaskFailed(self.job_id, task.task_id, reason))
        self._cascade(task)

    def _after_block(self, task: TaskRecord, dependencies_at_start: list[str]) -> None:
        """A blocked task runs again once its dependencies are done (now, if they already are)."""
        tasks = self.manager._tasks
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

    def _release_dependents(self, task: TaskRecord) -> None:
        tasks = self.manager._tasks
        for dependent_id in self.manager._dependents.get(task.task_id, ()):
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
        tasks = self.manager._tasks
        stack = [failed]
        while stack:
            upstream = stack.pop()
            for dependent_id in self.manager._dependents.get(upstream.task_id, ()):
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
        tasks = self.manager._tasks
        broken = next((dep for dep in task.dependencies if tasks[dep].status in BROKEN), None)
        if broken is not None:
            self._fail(task, f"dependency {broken} failed")
        elif task.status is PENDING and self._runnable(task):
            self._ready.append(task.task_id)

    def _initial_scan(self) -> None:
        tasks = self.manager._tasks
        for task_id in list(self.manager._jobs[self.job_id]):
            self._reconsider(tasks[task_id])

    def _deps_done(self, task: TaskRecord) -> bool:
        # a loop, not all() over a generator: called for every task at least twice
        tasks = self.manager._tasks
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
        if self.manager._store is not None:
            if output is not None and stored_output is None:
                stored_output = output_json(output)
            self.manager._state_changed(task, UNCHANGED if stored_output is None else stored_output)

    def _dispatch(self) -> list[str]:
        starts: list[str] = []
        limit = self.manager.max_parallel_tasks
        tasks = self.manager._tasks
        while self._ready and len(self._running) < limit:
            task_id = self._ready.popleft()
            task = tasks[task_id]
            if task.status is not PENDING or task_id in self._running or not self._runnable(task):
                continue
            if task_id in self.manager._abandoned:  # its timed-out attempt's thread still runs
                self._waiting.setdefault(task_id, task.status_reason or "")
                continue
            self._set(task, IN_PROGRESS, None)
            self._running.add(task_id)
            starts.append(task_id)
            self._pending_events.append(
                TaskStarted(self.job_id, task_id, task.agent, task.retry_count + 1, timestamp=task.updated_at)
            )
        return starts

    # -- stall detection ------------------------------------------------------------------

    async def _watch(self) -> None:
        interval = self.manager.heartbeat_interval
        assert interval is not None
        while True:
            deadline = self._last_change + interval
            if anyio.current_time() < deadline:
                await anyio.sleep_until(deadline)
                continue
            await self._on_stall()
            self._change_waiter = anyio.Event()
            await self._change_waiter.wait()
            self._change_waiter = None

    async def _on_stall(self) -> None:
        manager = self.manager
        tasks = manager._tasks
        stalled = tuple(tid for tid in manager._jobs[self.job_id] if tasks[tid].status in _STALLABLE)
        action = manager.stall_action
        name = str(action) if isinstance(action, StallAction) else getattr(action, "__name__", repr(action))
        self._pending_events.append(JobStalled(self.job_id, stalled, name))
        if action is StallAction.TERMINATE_JOB:
            for task_id in stalled:
                task = tasks[task_id]
                if task.status in (PENDING, IN_PROGRESS):
                    self._set(task, FAILED, TERMINATED, output=TaskOutput(success=False, error=TERMINATED))
                    self._pending_events.append(TaskFailed(self.job_id, task_id, TERMINATED))
            self._terminated = True
        elif action is StallAction.NOTIFY_PLANNING_AGENT:
            if PLANNING_AGENT in manager.registry:
                manager.add_task(
                    self.job_id,
                    "Re-plan the stalled job",
                    PLANNING_AGENT,
                    {"job_id": self.job_id, "stalled_tasks": list(stalled)},
                )
        else:
            outcome = action(self.job_id)
            if inspect.isawaitable(outcome):
                await outcome
        self._wakeup()


_FAIRNESS = 8  # inline tasks between two checkpoints


_WAITING = frozenset({PENDING, BLOCKED})
_STALLABLE = frozenset({PENDING, IN_PROGRESS, BLOCKED})
