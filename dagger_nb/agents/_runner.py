"""The scheduler of one job run: a ready queue, a few long-lived workers, group commits.

One loop owns every state change. Each round it applies what happened since
the last one (attempt results, tasks added, statuses set through the manager),
picks the ready tasks to start, writes every changed task in **one** SQLite
transaction, and only then emits the events and hands the started tasks to
the workers. So a change is durable before anything acts on it, and a busy job
pays one commit per round rather than one per change. Workers are
``max_parallel_tasks`` long-lived tasks, each handed one task id at a time
through its own event: starting one anyio task per task would cost more than
running a trivial agent, and a shared memory stream costs more per hand-off
than a per-worker event once several workers wait on it.

What happens to the tasks themselves when one changes state (dependents
released, failures cascaded, retries, the token budget) is in
``_transitions.py``; the run holds no reference to the manager's internals:
the manager hands it the task graph, the write-behind journal and the attempt
runner. Each run has its own loop hop (:attr:`JobRun.hop`): two jobs may run on
two loops at once (one started in the notebook's loop, one through ``run_sync``
on a private loop), and a change to a job is carried to that job's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from dagger_nb._loop import LoopHop, call_soon_on, loop_is_running
from dagger_nb.agents._attempt import Result
from dagger_nb.agents._transitions import TaskTransitions
from dagger_nb.agents.events import (
    JobEvent,
    JobFinished,
    JobStalled,
    TaskFailed,
    TaskStarted,
    TaskStatusChanged,
)
from dagger_nb.agents.job import PLANNING_AGENT, JobReport, StallAction, TaskOutcomes
from dagger_nb.agents.journal import AttemptJournal
from dagger_nb.agents.model import (
    BLOCKED,
    DONE,
    FAILED,
    IN_PROGRESS,
    PENDING,
    JobStatus,
    TaskOutput,
    TaskStatus,
    field_values,
    utc_now,
)
from dagger_nb.events import EventStream

if TYPE_CHECKING:
    from dagger_nb.agents._attempt import AttemptRunner
    from dagger_nb.agents._graph import TaskGraph
    from dagger_nb.agents.journal import Journal
    from dagger_nb.agents.manager import TaskManager

TERMINATED = "Job terminated due to inactivity"
CANCELLED_WHILE_RUNNING = "job cancelled while the task was running"
WAITING_FOR_THREAD = "waits for the abandoned thread of an earlier attempt to return"


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


class JobRun(TaskTransitions):
    """Runs one job once; :class:`JobHandle` wraps it for callers.

    ``manager`` is read for its settings only (and its public ``add_task`` when a
    stalled job asks the planning agent to re-plan); what the run changes it
    reaches through ``graph``, ``journal`` and ``attempts``, and ``on_end()``
    tells the manager the run is over. :attr:`hop` carries a change made from a
    worker thread to the loop this run runs on.
    """

    __slots__ = (
        "_added", "_cancel_requested", "_change_waiter", "_changed", "_finished", "_heartbeat", "_idle",
        "_last_change", "_loop", "_max_parallel", "_new_event", "_on_end", "_results", "_returned", "_scope",
        "_terminated", "_wake", "_watched", "events", "hop", "manager", "report", "started_at",
    )

    def __init__(
        self,
        manager: TaskManager,
        job_id: str,
        *,
        allowed_agents: frozenset[str] | None,
        graph: TaskGraph,
        journal: Journal,
        attempts: AttemptRunner,
        on_end: Callable[[], object],
    ) -> None:
        super().__init__(
            job_id,
            graph=graph,
            journal=journal,
            attempts=attempts,
            cache=manager.cache,
            allowed_agents=allowed_agents,
            max_tokens=manager.max_tokens,
        )
        self.manager = manager
        self.events: EventStream[JobEvent] = EventStream()
        self.report: JobReport | None = None
        self.started_at = time.time()
        #: carries calls from worker threads to this run's loop while it runs (in place otherwise)
        self.hop = LoopHop()
        self._on_end = on_end
        self._max_parallel = manager.max_parallel_tasks
        self._heartbeat = manager.heartbeat_interval
        self._idle: list[_Worker] = []
        self._results: list[Result] = []
        self._returned: list[str] = []
        self._added: list[str] = []
        self._changed: list[tuple[str, TaskStatus | None, str | None]] = []
        self._wake: anyio.Event | None = None
        self._new_event: Callable[[], anyio.Event] = anyio.Event
        self._change_waiter: anyio.Event | None = None
        self._last_change = 0.0
        self._watched = self._heartbeat is not None
        self._terminated = False
        self._cancel_requested = False
        self._scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None
        #: where the run runs, once it started: a cancel from elsewhere is carried there
        self._loop: asyncio.AbstractEventLoop | None = None

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
        """The abandoned thread of an earlier attempt of ``task_id`` has returned."""
        self._returned.append(task_id)
        self._wakeup()

    async def wait_finished(self) -> None:
        """Wait until the run has ended (its report exists)."""
        if self.report is None:
            if self._finished is None:
                self._finished = anyio.Event()
            await self._finished.wait()

    def cancel(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Cancel the run, from any thread; unstarted tasks stay pending.

        A run that has not started yet ends ``CANCELLED`` at once (on ``loop``, the
        loop it was to run on, when called from another thread).
        """
        loop = self._loop or loop
        if loop is None:
            self._cancel_here()
        else:  # a cancel scope belongs to its loop's thread (a take-over may come from another one)
            call_soon_on(loop, self._cancel_here)

    def _cancel_here(self) -> None:
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()
        elif self._loop is None:
            self.drop()

    def drop(self) -> JobReport:
        """End a run that never started (its owner closed first): cancelled, nothing ran."""
        if self.report is None:
            if self._loop is None and loop_is_running():  # nothing starts it any more
                self._loop = asyncio.get_running_loop()
            return self._finish(JobStatus.CANCELLED)
        return self.report

    def _wakeup(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> JobReport:
        """Run the job until nothing is left to do, then return its report."""
        if self.report is not None:  # dropped before it could start
            return self.report
        self._loop = asyncio.get_running_loop()
        try:
            with self.hop.entered(), anyio.CancelScope() as self._scope:
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
        return self._finish(status)

    async def _main(self) -> JobStatus:
        # The running backend's event class, called directly: anyio.Event() looks the
        # backend up on every call, and a run makes one or two events per task.
        self._new_event = type(anyio.Event())
        self._wake = self._new_event()
        self._last_change = anyio.current_time()
        self._set_job_status(JobStatus.RUNNING)
        self._initial_scan()
        async with anyio.create_task_group() as group:
            for _ in range(self._max_parallel):
                worker = _Worker(self._new_event)
                self._idle.append(worker)
                group.start_soon(self._worker, worker)
            if self._heartbeat is not None:
                group.start_soon(self._watch)
            await self._schedule()
            group.cancel_scope.cancel()
        if self._terminated:
            return JobStatus.FAILED
        tasks = self._tasks
        return (
            JobStatus.COMPLETED
            if all(tasks[tid].status in DONE for tid in self._graph.jobs[self.job_id])
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
        self._journal.flush()
        self._emit_pending()
        return starts

    def _emit_pending(self) -> None:
        if self._pending_events:
            events, self._pending_events = self._pending_events, []
            self.events.emit_many(events)

    def _set_job_status(self, status: JobStatus) -> None:
        self._graph.job_status[self.job_id] = status
        self._journal.job_changed(self.job_id, status)

    def _finish(self, status: JobStatus) -> JobReport:
        for journal in self._journals.values():  # attempts that will not end leave nothing
            journal.discard(self._graph, self._journal)
        self._journals.clear()
        if status is JobStatus.CANCELLED:
            for task_id in self._running:
                task = self._tasks[task_id]
                if task.status is IN_PROGRESS:
                    self._set(task, PENDING, CANCELLED_WHILE_RUNNING)
                    self._pending_events.append(
                        TaskStatusChanged(self.job_id, task_id, PENDING, CANCELLED_WHILE_RUNNING)
                    )
        self._set_job_status(status)
        self._on_end()
        try:
            self._journal.flush()
        except BaseException:
            self._pending_events.clear()  # a change that could not be written is never announced
            # The run ends failed whatever it reached: its end could not be recorded.
            status = JobStatus.FAILED
            self._set_job_status(status)
            raise
        finally:
            self._emit_pending()
            self.events.emit(JobFinished(self.job_id, status))
            self.events.close()
            tasks = self._tasks
            outcomes = TaskOutcomes({tid: field_values(tasks[tid]) for tid in self._graph.jobs[self.job_id]})
            self.report = JobReport(
                self.job_id, status, outcomes, self.started_at, time.time(), tokens=self.tokens, cost=self.cost
            )
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
                result = await self._attempts.run(task_id, journal)
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
                self._announce(self._tasks[task_id])
                self._reconsider(self._tasks[task_id])
            changed = True
        if self._changed:
            notes, self._changed = self._changed, []
            for task_id, status, reason in notes:
                self._apply_change(self._tasks[task_id], status, reason)
            changed = True
        if self._results:
            results, self._results = self._results, []
            for result in results:
                self._apply_result(result)
            changed = True
        if self._returned:
            returned, self._returned = self._returned, []
            for task_id in returned:
                self._thread_returned(self._tasks[task_id])
            changed = True
        return changed

    def _dispatch(self) -> list[str]:
        starts: list[str] = []
        limit = self._max_parallel
        tasks = self._tasks
        wait_for_thread = self._attempts.wait_for_thread
        while self._ready and len(self._running) < limit:
            task_id = self._ready.popleft()
            task = tasks[task_id]
            if task.status is not PENDING or task_id in self._running or not self._runnable(task):
                continue
            if wait_for_thread(task):  # an abandoned attempt's thread (timed out, cancelled) still runs
                if task_id not in self._waiting:
                    self._waiting[task_id] = task.status_reason or ""
                    self._set(task, PENDING, WAITING_FOR_THREAD)
                    self._pending_events.append(TaskStatusChanged(self.job_id, task_id, PENDING, WAITING_FOR_THREAD))
                continue
            self._set(task, IN_PROGRESS, None)
            self._running.add(task_id)
            starts.append(task_id)
            self._pending_events.append(
                TaskStarted(
                    self.job_id, task_id, task.agent, task.retry_count + 1, timestamp=task.updated_at.timestamp()
                )
            )
        return starts

    # -- stall detection ------------------------------------------------------------------

    async def _watch(self) -> None:
        interval = self._heartbeat
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
        tasks = self._tasks
        stalled = tuple(tid for tid in self._graph.jobs[self.job_id] if tasks[tid].status in _STALLABLE)
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


_STALLABLE = frozenset({PENDING, IN_PROGRESS, BLOCKED})
