"""The task manager: jobs of tasks that agents create and run, persisted in SQLite.

>>> from dagger_nb.agents import TaskAgentRegistry, TaskManager, task_agent
>>> registry = TaskAgentRegistry()
>>> @task_agent(name="shout", registry=registry)
... async def shout(input, ctx):
...     return {"text": input["text"].upper()}
>>> manager = TaskManager(registry=registry)
>>> task_id = manager.add_objective("demo", "Shout hello", "shout", {"text": "hello"})
>>> report = manager.run_job_sync("demo")
>>> report.status, manager.get_task(task_id).output.data
(<JobStatus.COMPLETED: 'completed'>, {'text': 'HELLO'})
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
from pydantic import ValidationError

from dagger_nb._sync import run_sync
from dagger_nb.agents._dot import job_graph
from dagger_nb.agents._graph import dependency_path, retry_problem, task_problems, timeout_problem
from dagger_nb.agents._host import _Host
from dagger_nb.agents._report import tasks_to_frame
from dagger_nb.agents._runner import JobRun
from dagger_nb.agents.context import TaskContext
from dagger_nb.agents.job import JobHandle, JobReport, StallAction, StallHandler
from dagger_nb.agents.journal import AttemptJournal
from dagger_nb.agents.model import (
    DONE,
    JobStatus,
    Task,
    TaskRecord,
    TaskStatus,
    TaskType,
    new_task,
    snapshot,
    utc_now,
)
from dagger_nb.agents.registry import TaskAgent, TaskAgentRegistry, default_agent_registry
from dagger_nb.agents.remote import call_on_backend
from dagger_nb.agents.store import UNCHANGED, StateRow, TaskStore
from dagger_nb.backends import LocalBackend
from dagger_nb.cache import Cache
from dagger_nb.errors import AgentNotFound, DependencyCycleError, ExecutionError, TaskError

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

Durability = Literal["at_least_once", "at_most_once"]
RESTARTED = "Task was in progress during system restart"

# Generated task ids need to be unique, not unpredictable: a generator seeded from os.urandom
# costs no system call per task. A private one, so that a notebook's random.seed(42) cannot
# make a rerun generate the ids its database already holds; reseeded in a forked child.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_random_bits = _ids.getrandbits


class TaskManager:
    """Jobs of tasks run by registered agents, optionally persisted to the SQLite file ``db``.

    Use it as a context manager (``with`` or ``async with``), or call
    :meth:`close` / :meth:`aclose`, to release the database and stop
    background jobs.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        heartbeat_interval: float | None = 30.0,
        stall_action: StallHandler = StallAction.NOTIFY_PLANNING_AGENT,
        registry: TaskAgentRegistry | None = None,
        max_parallel_tasks: int = 4,
        durability: Durability = "at_least_once",
        cache: Cache | None = None,
        backend: Any = None,
    ) -> None:
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise TaskError(f"heartbeat_interval must be positive (or None), got {heartbeat_interval!r}")
        if max_parallel_tasks < 1:
            raise TaskError(f"max_parallel_tasks must be at least 1, got {max_parallel_tasks!r}")
        if durability not in ("at_least_once", "at_most_once"):
            raise TaskError(f"durability must be 'at_least_once' or 'at_most_once', got {durability!r}")
        if not isinstance(stall_action, StallAction) and not callable(stall_action):
            raise TaskError(f"stall_action must be a StallAction or a callable, got {stall_action!r}")
        self.heartbeat_interval = heartbeat_interval
        self.stall_action = stall_action
        self.registry = default_agent_registry if registry is None else registry
        self.max_parallel_tasks = max_parallel_tasks
        self.durability: Durability = durability
        self.cache = Cache() if cache is None else cache
        #: Where agents run: None (this process) or a :class:`dagger_nb.DaskBackend`.
        self.backend = None if isinstance(backend, LocalBackend) else backend
        if self.backend is not None and not callable(getattr(self.backend, "call", None)):
            raise TaskError(f"backend must be a DaskBackend (or None for this process), got {backend!r}")
        self._tasks: dict[str, TaskRecord] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._jobs: dict[str, list[str]] = {}
        self._dependents: dict[str, list[str]] = {}
        self._job_status: dict[str, JobStatus] = {}
        self._dirty: dict[str, TaskRecord] = {}
        #: the new state columns of tasks a running job changed
        self._dirty_states: dict[str, StateRow] = {}
        self._dirty_jobs: dict[str, JobStatus] = {}
        self._flush_pending = False
        self._runs: dict[str, JobRun] = {}
        #: tasks whose timed-out attempt's thread still runs (added and removed from any thread)
        self._abandoned: set[str] = set()
        self._host: _Host | None = None
        self._loop_users = 0
        self._loop_thread: int | None = None
        self._loop_token: Any = None
        self._store = TaskStore(db, on_takeover=self._taken_over) if db is not None else None
        if self._store is not None:
            try:
                self._load()
            except BaseException:  # a damaged file: release it
                self._store.close()
                raise

    # -- building jobs --------------------------------------------------------------------

    def add_objective(
        self,
        job_id: str,
        description: str,
        agent: str,
        input: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
    ) -> str:
        """Add the job's top-level task (``TaskType.OBJECTIVE``); returns its id."""
        return self.add_task(job_id, description, agent, input, task_type=TaskType.OBJECTIVE, task_id=task_id)

    def add_story(
        self,
        job_id: str,
        description: str,
        agent: str,
        input: dict[str, Any] | None = None,
        *,
        parent: str,
        task_id: str | None = None,
    ) -> str:
        """Add a ``TaskType.STORY`` under ``parent``; returns its id."""
        return self.add_task(
            job_id, description, agent, input, parent=parent, task_type=TaskType.STORY, task_id=task_id
        )

    def add_task(
        self,
        job_id: str,
        description: str,
        agent: str,
        input: dict[str, Any] | None = None,
        *,
        dependencies: Iterable[str] = (),
        parent: str | None = None,
        task_type: TaskType = TaskType.TASK,
        task_id: str | None = None,
        timeout: float | None = None,
        max_retries: int = 0,
        acceptance_criteria: str | None = None,
    ) -> str:
        """Add a pending task for ``agent`` to job ``job_id`` and return its id (generated if not given).

        Raises :class:`TaskError` naming every problem (empty job id, duplicate
        task id, self-dependency, unknown dependency or parent), and
        :class:`AgentNotFound` listing the registered agents. If the job is
        running, the task is picked up at once.
        """
        return self._on_loop(
            self._add_task,
            job_id,
            description,
            agent,
            input,
            tuple(dependencies),
            parent,
            task_type,
            task_id,
            timeout,
            max_retries,
            acceptance_criteria,
        )

    def add_dependency(self, task_id: str, depends_on: str) -> None:
        """Make ``task_id`` wait for ``depends_on`` (:class:`DependencyCycleError` lists a cycle)."""
        self._on_loop(self._add_dependency, task_id, depends_on)

    def update_task_status(self, task_id: str, status: TaskStatus | str, reason: str | None = None) -> None:
        """Set a task's status (accept or reject it, block it, reset it to pending, ...).

        Setting the running task ``BLOCKED`` from its own agent parks it like
        :class:`NeedsDependencies`. In a running job the change is picked up at once.
        """
        self._on_loop(self._update_task_status, task_id, status, reason)

    # -- reading --------------------------------------------------------------------------

    def get_task(self, task_id: str) -> Task | None:
        """A snapshot of the task, or ``None`` if there is no such task."""
        task = self._tasks.get(task_id)
        return None if task is None else snapshot(task, deep=True)

    def tasks(self, job_id: str | None = None) -> list[Task]:
        """Snapshots of every task (of ``job_id``), in creation order."""
        return [snapshot(task, deep=True) for task in self._iter_tasks(job_id)]

    def tasks_frame(self, job_id: str | None = None) -> pd.DataFrame:
        """One row per task (of ``job_id``), flat columns (statuses as text, ids comma-separated,
        input and output data as JSON text, the output's error on its own)."""
        return tasks_to_frame([snapshot(task) for task in self._iter_tasks(job_id)])

    def jobs(self) -> list[str]:
        """Every job id, in the order jobs were created."""
        return list(self._jobs)

    def job_status(self, job_id: str) -> JobStatus | None:
        """The status of the job's last run (``RUNNING`` after a crash means it was interrupted)."""
        self._require_job(job_id)
        return self._job_status.get(job_id)

    def get_objective(self, job_id: str) -> Task | None:
        """The job's first ``OBJECTIVE`` task, or ``None``."""
        for task in self._iter_tasks(job_id):
            if task.task_type is TaskType.OBJECTIVE:
                return snapshot(task, deep=True)
        return None

    def get_dependency_outputs(self, task_id: str) -> list[dict[str, Any]]:
        """The output data of ``task_id``'s dependencies, in dependency order.

        Raises :class:`TaskError` naming every dependency that is not completed.
        """
        task = self._require(task_id)
        outputs: list[dict[str, Any]] = []
        missing: list[str] = []
        for dep in task.dependencies:
            upstream = self._tasks[dep]
            if upstream.status not in DONE:
                missing.append(f"'{dep}' ({upstream.status})")
            else:
                outputs.append(dict(upstream.output.data or {}) if upstream.output else {})
        if missing:
            raise TaskError(f"task '{task_id}': dependencies not completed: {', '.join(missing)}")
        return outputs

    def get_dot_graph(self, job_id: str | None = None) -> str:
        """The tasks (of ``job_id``) as Graphviz DOT: status colours, dependencies, parents dashed."""
        if job_id is not None:
            self._require_job(job_id)
        jobs = [job_id] if job_id is not None else list(self._jobs)
        return job_graph({job: [self._tasks[tid] for tid in self._jobs[job]] for job in jobs}, name=job_id)

    # -- running --------------------------------------------------------------------------

    def start_job(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> JobHandle:
        """Run the job in the background on the running event loop and return its handle at once.

        Only tasks whose agent is in ``allowed_agents`` (when given) run; the
        others stay pending. The run belongs to a task group the manager owns
        until :meth:`aclose`.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ExecutionError(
                "start_job() needs a running event loop (a notebook cell or async code); in a script use run_job_sync()"
            ) from None
        handle = self._prepare(job_id, allowed_agents)
        if self._host is None or not self._host.serves(loop):
            self._host = _Host(loop)
        self._host.submit(handle._execute)
        return handle

    async def run_job(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> JobReport:
        """Run the job in the calling task until it ends; returns its report."""
        handle = self._prepare(job_id, allowed_agents)
        await handle._execute()
        return await handle.wait()

    def run_job_sync(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> JobReport:
        """:meth:`run_job` for synchronous code (a private loop in a worker thread if one is running)."""
        return run_sync(partial(self.run_job, job_id, allowed_agents=allowed_agents))

    def running_jobs(self) -> list[str]:
        """The ids of the jobs running now."""
        return list(self._runs)

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Release the database; :class:`ExecutionError` if jobs still run (use :meth:`aclose`)."""
        if self._runs:
            raise ExecutionError(
                f"jobs still running: {', '.join(sorted(self._runs))}; cancel them or await manager.aclose()"
            )
        if self._host is not None:
            self._host.close()
            self._host = None
        if self._store is not None:
            try:
                self._flush()
            finally:  # released even when the last changes cannot be written (a full disk)
                self._store.close()

    async def aclose(self) -> None:
        """Cancel background jobs, wait for them to end, and release the database."""
        if self._host is not None:
            host, self._host = self._host, None
            await host.aclose()
        running = list(self._runs.values())
        for run in running:
            run.cancel()
        with anyio.move_on_after(10):  # jobs driven by other tasks end promptly once cancelled
            for run in running:
                await run.wait_finished()
        self.close()

    def _taken_over(self) -> None:
        """A newer TaskManager in this process opened our file (a re-run cell): cancel our jobs,
        then flush and close the store, so nothing of ours is written after the newer one loaded it."""
        host, self._host = self._host, None
        runs = list(self._runs.values())

        def cancel() -> None:
            if host is not None:
                host.close()
            for run in runs:
                run.cancel()

        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if host is not None and host.loop is not here and host.loop.is_running():
            host.loop.call_soon_threadsafe(cancel)  # cancel scopes belong to their loop's thread
        else:
            cancel()
        if self._store is not None:
            try:
                self._flush()
            finally:
                store, self._store = self._store, None
                store.close()

    def __enter__(self) -> TaskManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> TaskManager:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = self._store.path if self._store is not None else "memory"
        return f"<TaskManager {where}: {len(self._tasks)} tasks in {len(self._jobs)} jobs>"

    # -- the one seam where an agent is called (a backend plugs in here) ------------------

    def _call_agent(self, agent: TaskAgent, payload: dict[str, Any], ctx: TaskContext) -> Awaitable[Any]:
        # A local async agent's own coroutine is returned, not wrapped in another one:
        # the runner awaits one per task.
        if self.backend is None and agent.is_async:
            return agent.fn(payload, ctx)
        return self._call_elsewhere(agent, payload, ctx)

    async def _call_elsewhere(self, agent: TaskAgent, payload: dict[str, Any], ctx: TaskContext) -> Any:
        if self.backend is None:
            return await anyio.to_thread.run_sync(agent.fn, payload, ctx, abandon_on_cancel=True)
        return await call_on_backend(self.backend, agent, payload, ctx)

    # -- internals ------------------------------------------------------------------------

    def _add_task(
        self,
        job_id: str,
        description: str,
        agent: str,
        input: dict[str, Any] | None,
        dependencies: tuple[str, ...],
        parent: str | None,
        task_type: TaskType,
        task_id: str | None,
        timeout: float | None,
        max_retries: int,
        acceptance_criteria: str | None,
        journal: AttemptJournal | None = None,
    ) -> str:
        """With ``journal`` (an attempt's), the task exists in memory but joins the graph,
        and the database, only when the attempt ends (see :mod:`dagger_nb.agents.journal`)."""
        if not job_id:
            raise TaskError("job id must not be empty")
        if agent not in self.registry:
            raise AgentNotFound(agent, self.registry.names())
        if task_id is None:
            task_id = f"task-{_random_bits(48):012x}"
        problems = task_problems(self._tasks, job_id, task_id, dependencies, parent)
        problems += filter(None, (retry_problem(max_retries), timeout_problem(timeout)))
        if problems:
            raise TaskError(f"cannot add task '{task_id}' to job '{job_id}': {'; '.join(problems)}")
        try:
            task = new_task(
                job_id,
                task_id,
                description=description,
                agent=agent,
                input={} if input is None else input,
                dependencies=list(dict.fromkeys(dependencies)),
                parent=parent,
                task_type=task_type,
                timeout=timeout,
                max_retries=max_retries,
                acceptance_criteria=acceptance_criteria,
                now=utc_now(),
            )
        except ValidationError as error:
            details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise TaskError(f"cannot add task '{task_id}' to job '{job_id}': {details}") from None
        seq = self._next_seq
        if self._store is not None:
            try:
                self._store.encode(seq, task)  # fails here, before the task exists, if not JSON-able
            except ValueError as error:
                raise TaskError(
                    f"cannot add task '{task_id}' to job '{job_id}': input cannot be stored as JSON: {error}"
                ) from None
        if journal is not None:
            journal.check_open()
            self._insert(task, seq, linked=False)
            journal.added.append(task_id)
            return task_id
        if self._store is not None:
            self._dirty[task_id] = task
        self._insert(task, seq)
        run = self._runs.get(job_id)
        if run is not None:
            run.note_added(task_id)
        else:
            self._flush_soon()
        return task_id

    def _insert(self, task: TaskRecord, seq: int, *, linked: bool = True) -> None:
        self._tasks[task.task_id] = task
        self._seq[task.task_id] = seq
        self._next_seq = max(self._next_seq, seq + 1)
        self._jobs.setdefault(task.job_id, []).append(task.task_id)
        if linked:
            self._link(task)

    def _link(self, task: TaskRecord) -> None:
        """Make ``task`` one of its dependencies' dependents (so finishing them releases it)."""
        for dep in task.dependencies:
            self._dependents.setdefault(dep, []).append(task.task_id)

    def _forget(self, task_id: str) -> None:
        """Remove an unlinked, unwritten task (of an attempt that will not end)."""
        task = self._tasks.pop(task_id)
        del self._seq[task_id]
        self._jobs[task.job_id].remove(task_id)
        self._dirty.pop(task_id, None)

    def _add_dependency(self, task_id: str, depends_on: str, journal: AttemptJournal | None = None) -> None:
        task = self._require(task_id)
        upstream = self._require(depends_on)
        if task_id == depends_on:
            raise TaskError(f"task '{task_id}' cannot depend on itself")
        if upstream.job_id != task.job_id:
            raise TaskError(
                f"task '{task_id}' (job '{task.job_id}') cannot depend on '{depends_on}' of job '{upstream.job_id}'"
            )
        if depends_on in task.dependencies:
            return
        path = dependency_path(self._tasks, depends_on, task_id)
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
        task.dependencies = [*task.dependencies, depends_on]
        self._dependents.setdefault(depends_on, []).append(task_id)
        self._touch(task)
        self._changed(task, None, None)

    def _update_task_status(self, task_id: str, status: TaskStatus | str, reason: str | None) -> None:
        task = self._require(task_id)
        try:
            status = TaskStatus(status)
        except ValueError:
            known = ", ".join(member.value for member in TaskStatus)
            raise TaskError(f"unknown task status {status!r} (known: {known})") from None
        run = self._runs.get(task.job_id)
        journal = None if run is None else run.journal_of(task_id)
        if journal is not None and status is TaskStatus.BLOCKED:
            journal.blocked = reason or "blocked by its agent"  # parks it when the attempt ends
            return
        task.status = status
        task.status_reason = reason
        self._touch(task)
        self._changed(task, status, reason)

    def _changed(self, task: TaskRecord, status: TaskStatus | None, reason: str | None) -> None:
        run = self._runs.get(task.job_id)
        if run is not None:
            run.note_changed(task.task_id, status, reason)
        else:
            self._flush_soon()

    def _touch(self, task: TaskRecord) -> None:
        task.updated_at = utc_now()
        if self._store is not None:
            self._dirty[task.task_id] = task

    def _state_changed(self, task: TaskRecord, stored_output: str | None) -> None:
        """A running job changed ``task``'s state columns (and its output, unless ``UNCHANGED``).

        The row is built now, not at the flush: the runner changes a task's state
        through here only, so nothing can change it in between without another call.
        """
        if self._store is None:  # a newer manager took the file over: its state is no longer ours
            return
        task_id = task.task_id
        if stored_output is UNCHANGED:
            earlier = self._dirty_states.get(task_id)
            if earlier is not None:
                stored_output = earlier[2]  # keep the output an earlier change of this round wrote
        self._dirty_states[task_id] = self._store.state_row(self._seq[task_id], task, stored_output)

    def _set_job_status(self, job_id: str, status: JobStatus) -> None:
        self._job_status[job_id] = status
        if self._store is not None:
            self._dirty_jobs[job_id] = status

    def _flush(self) -> None:
        """Make every pending change durable (one transaction)."""
        self._flush_pending = False
        if self._store is None or not (self._dirty or self._dirty_states or self._dirty_jobs):
            return
        tasks, self._dirty = self._dirty, {}
        states, self._dirty_states = self._dirty_states, {}
        jobs, self._dirty_jobs = self._dirty_jobs, {}
        try:
            self._store.save(
                ((self._seq[tid], task) for tid, task in tasks.items()) if tasks else (),
                jobs.items(),
                # a whole row written in this transaction already holds the task's state
                states=[row for tid, row in states.items() if tid not in tasks] if tasks else states.values(),
            )
        except BaseException:
            self._dirty = {**tasks, **self._dirty}
            self._dirty_states = {**states, **self._dirty_states}
            self._dirty_jobs = {**jobs, **self._dirty_jobs}
            raise

    def _flush_soon(self) -> None:
        """Commit a change made outside a running job: at once in plain sync code, else group-commit.

        On an event loop (a notebook cell, async code) the changes made in one
        step of the loop share one transaction, committed when the step ends:
        nothing can act on a task of a job that is not running before that (a
        job's run commits everything pending before its first dispatch).
        """
        if self._store is None or self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flush_pending = True
        loop.call_soon(self._flush)

    def _load(self) -> None:
        assert self._store is not None
        tasks, jobs = self._store.load()
        for seq, task in tasks:
            self._insert(task, seq)
            if task.status is TaskStatus.IN_PROGRESS:
                if self.durability == "at_least_once":
                    task.status = TaskStatus.PENDING
                    task.retry_count += 1
                    task.status_reason = f"{RESTARTED}; running it again"
                else:
                    task.status = TaskStatus.BLOCKED
                    task.status_reason = RESTARTED
                self._touch(task)
        self._job_status.update(jobs)
        self._flush()

    def _thread_returned(self, task_id: str) -> None:
        task = self._tasks.get(task_id)
        run = None if task is None else self._runs.get(task.job_id)
        if run is not None:
            run.note_thread_returned(task_id)

    def _require(self, task_id: str) -> TaskRecord:
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskError(f"unknown task '{task_id}'")
        return task

    def _require_job(self, job_id: str) -> list[str]:
        if job_id not in self._jobs:
            known = ", ".join(self._jobs) or "none"
            raise TaskError(f"unknown job '{job_id}' (known: {known})")
        return self._jobs[job_id]

    def _iter_tasks(self, job_id: str | None) -> Iterable[TaskRecord]:
        if job_id is None:
            return self._tasks.values()
        return [self._tasks[tid] for tid in self._require_job(job_id)]

    def _prepare(self, job_id: str, allowed_agents: Iterable[str] | None) -> JobHandle:
        self._require_job(job_id)
        if job_id in self._runs:
            raise ExecutionError(f"job '{job_id}' is already running")
        allowed = None if allowed_agents is None else frozenset(allowed_agents)
        if allowed is not None:
            unknown = sorted(name for name in allowed if name not in self.registry)
            if unknown:
                raise AgentNotFound(unknown[0], self.registry.names())
        run = JobRun(self, job_id, allowed_agents=allowed)
        self._runs[job_id] = run
        return JobHandle(job_id, run)

    def _enter_loop(self) -> None:
        self._loop_users += 1
        self._loop_thread = threading.get_ident()
        self._loop_token = anyio.lowlevel.current_token()

    def _leave_loop(self) -> None:
        self._loop_users -= 1
        if self._loop_users == 0:
            self._loop_thread = self._loop_token = None

    def _on_loop(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on the running jobs' loop thread (sync agents call in from worker threads)."""
        if self._loop_token is None or threading.get_ident() == self._loop_thread:
            return call(*args)
        return anyio.from_thread.run_sync(call, *args, token=self._loop_token)
