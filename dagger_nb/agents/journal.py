"""What is waiting to be written: the manager's write-behind :class:`Journal`, and an attempt's changes.

:class:`Journal` holds the changes not yet in the database (whole task rows,
the state columns a running job changed, job statuses) and writes them in one
transaction when flushed. The manager builds it and hands it to every job run,
whose scheduling round flushes it once.

:class:`AttemptJournal`: what one attempt of a task changes in its job is
durable together when the attempt ends, or never. A planner that spawns five
children and is killed after the third must not leave three of them in the
database: when it runs again it would find part of its plan, take it for the
whole, and the job would end ``completed`` with work never done. So the tasks
an attempt adds, the dependencies it gives its own task, the status it sets on
itself and the usage it reports are kept in an :class:`AttemptJournal` while
the agent runs. The tasks are in the graph at once (the agent can name them as
dependencies of further children, ``get_task`` shows them), but nothing
schedules them and nothing writes them until the runner applies the attempt's
result: then the journal is committed into the graph and the whole of it is
written in the same transaction as the attempt's outcome. An attempt that
never ends (a cancelled job, a killed process) leaves nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dagger_nb._callables import usage_problems
from dagger_nb.agents.model import JobStatus, TaskRecord, utc_now
from dagger_nb.agents.store import UNCHANGED, StateRow
from dagger_nb.errors import StorageError, TaskError, describe_error

if TYPE_CHECKING:
    from dagger_nb.agents._graph import TaskGraph
    from dagger_nb.agents.store import TaskStore


class Journal:
    """The changes not yet written to ``store`` (None: in memory, nothing to write)."""

    __slots__ = ("_pending", "failure", "jobs", "seq", "states", "store", "tasks")

    def __init__(self, store: TaskStore | None, seq: dict[str, int]) -> None:
        self.store = store
        self.seq = seq
        #: tasks whose whole row is written at the next flush
        self.tasks: dict[str, TaskRecord] = {}
        #: the new state columns of tasks a running job changed
        self.states: dict[str, StateRow] = {}
        self.jobs: dict[str, JobStatus] = {}
        #: the first failure of a deferred flush (nobody was there to see it): the manager's
        #: next change, job run or close raises it, unless what waits can be written by then
        self.failure: StorageError | None = None
        self._pending = False

    def touch(self, task: TaskRecord) -> None:
        """``task`` changed now (through the manager): its whole row is written at the next flush."""
        task.updated_at = utc_now()
        if self.store is not None:
            self.tasks[task.task_id] = task

    def mark(self, task: TaskRecord) -> None:
        """Write ``task``'s whole row at the next flush (its time is already set)."""
        if self.store is not None:
            self.tasks[task.task_id] = task

    def state_changed(self, task: TaskRecord, stored_output: Any) -> None:
        """A running job changed ``task``'s state columns (and its output, unless ``UNCHANGED``).

        The row is built now, not at the flush: the runner changes a task's state
        through here only, so nothing can change it in between without another call.
        """
        store = self.store
        if store is None:  # a newer manager took the file over: its state is no longer ours
            return
        task_id = task.task_id
        if stored_output is UNCHANGED:
            earlier = self.states.get(task_id)
            if earlier is not None:
                stored_output = earlier[2]  # keep the output an earlier change of this round wrote
        self.states[task_id] = store.state_row(self.seq[task_id], task, stored_output)

    def job_changed(self, job_id: str, status: JobStatus) -> None:
        """Write the job's new status at the next flush."""
        if self.store is not None:
            self.jobs[job_id] = status

    def flush(self) -> None:
        """Make every pending change durable (one transaction); kept for the next try if it fails."""
        self._pending = False
        store = self.store
        if store is None or not (self.tasks or self.states or self.jobs):
            return
        tasks, self.tasks = self.tasks, {}
        states, self.states = self.states, {}
        jobs, self.jobs = self.jobs, {}
        seq = self.seq
        try:
            store.save(
                ((seq[tid], task) for tid, task in tasks.items()) if tasks else (),
                jobs.items(),
                # a whole row written in this transaction already holds the task's state
                states=[row for tid, row in states.items() if tid not in tasks] if tasks else states.values(),
            )
        except BaseException:
            self.tasks = {**tasks, **self.tasks}
            self.states = {**states, **self.states}
            self.jobs = {**jobs, **self.jobs}
            raise

    def flush_soon(self) -> None:
        """Commit a change made outside a running job: at once in plain sync code, else group-commit.

        On an event loop (a notebook cell, async code) the changes made in one
        step of the loop share one transaction, committed when the step ends:
        nothing can act on a task of a job that is not running before that (a
        job's run commits everything pending before its first dispatch).
        """
        if self.store is None or self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._pending = True
        loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        """:meth:`flush` from the loop: a failure is kept for :meth:`check`, not left to the
        loop's exception handler (a log line, while the caller believes its change stored)."""
        try:
            self.flush()
        except Exception as error:
            if self.failure is None:
                self.failure = error if isinstance(error, StorageError) else StorageError(
                    f"cannot write tasks to '{self.store.path if self.store else '?'}': "
                    + describe_error(error)
                )

    def check(self) -> None:
        """Raise the kept failure of a deferred flush, unless what it could not write can be
        written now (the disk has room again): then nothing was lost and it is forgotten."""
        failure = self.failure
        if failure is None:
            return
        try:
            self.flush()
        except Exception:
            raise failure from None
        self.failure = None

    def close(self) -> None:
        """Flush, then close the store, which is released even when the last changes cannot be written
        (a change made later fails to write, with :class:`StorageError`)."""
        store = self.store
        if store is None:
            return
        try:
            self.check()  # an earlier deferred write's failure, if what it held still cannot be written
            self.flush()
        finally:
            store.close()

    def detach(self) -> None:
        """:meth:`close`, then keep nothing for the file: a newer manager took it over."""
        try:
            self.close()
        finally:
            self.store = None


@dataclass(slots=True)
class AttemptJournal:
    """The changes of one running attempt of ``task_id``, not yet part of the job's graph."""

    task_id: str
    #: tasks the attempt added, in creation order (in the graph, unlinked, unwritten)
    added: list[str] = field(default_factory=list)
    #: new dependencies of the running task itself
    dependencies: list[str] = field(default_factory=list)
    #: the reason, when the agent set its own task ``BLOCKED`` through the manager
    blocked: str | None = None
    #: set once committed or discarded: an abandoned thread's later changes are refused
    closed: bool = False
    #: the usage the attempt reported (``ctx.record_usage``): None until it reports some
    usage: Usage | None = None

    def check_open(self) -> None:
        """:class:`TaskError` if the attempt has ended (a timed-out sync agent's thread runs on)."""
        if self.closed:
            raise TaskError(
                f"task '{self.task_id}': this attempt has ended (timed out or cancelled); "
                "the tasks and dependencies it adds now are not kept"
            )

    def depends_on(self, task_id: str) -> bool:
        """True when the attempt already made its task depend on ``task_id``."""
        return task_id in self.dependencies

    def commit(self, graph: TaskGraph, journal: Journal) -> list[str]:
        """Link what the attempt made into the job and mark all of it for the next write;
        returns the ids of the tasks it added."""
        tasks = graph.tasks
        for task_id in self.added:
            task = tasks[task_id]
            graph.link(task)
            journal.touch(task)
        if self.dependencies:
            task = tasks[self.task_id]
            for dep in self.dependencies:
                if dep not in task.dependencies:
                    graph.add_dependency(task, dep)
            journal.touch(task)
        added, self.added, self.dependencies = self.added, [], []
        self.closed = True
        return added

    def discard(self, graph: TaskGraph, journal: Journal) -> None:
        """Forget what the attempt made: the attempt will not end (its job was cancelled)."""
        for task_id in reversed(self.added):
            graph.forget(task_id)
            journal.tasks.pop(task_id, None)
        self.added, self.dependencies, self.blocked = [], [], None
        self.closed = True


@dataclass(slots=True)
class Usage:
    """Tokens, cost and models reported by ``ctx.record_usage`` (one attempt's, or a task's)."""

    tokens: int = 0
    cost: float | None = None
    models: list[str] = field(default_factory=list)

    def add(self, tokens: int, cost: float | None, model: str | None) -> None:
        """Count one report (already checked)."""
        self.tokens += tokens
        if cost is not None:
            self.cost = cost if self.cost is None else self.cost + cost
        if model is not None and model not in self.models:
            self.models.append(model)

    def add_to(self, task: TaskRecord) -> None:
        """Add this usage to ``task``'s totals (its containers replaced, not changed in place)."""
        task.tokens += self.tokens
        if self.cost is not None:
            task.cost = self.cost if task.cost is None else task.cost + self.cost
        new = [model for model in self.models if model not in task.models]
        if new:
            task.models = [*task.models, *new]


def check_usage(tokens: object, cost: object, model: object) -> None:
    """:class:`TaskError` naming what is wrong with a ``record_usage`` call (a boolean is not a number)."""
    problems = usage_problems(tokens, cost, model)
    if problems:
        raise TaskError(f"record_usage(): {'; '.join(problems)}")
