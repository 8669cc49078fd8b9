"""The task manager: jobs of tasks that agents create and run, persisted in SQLite.

>>> from dagger_nb.agents import TaskAgentRegistry, TaskManager, task_agent
>>> registry = TaskAgentRegistry()
>>> @task_agent(name="shout", registry=registry)
... async def shout(input, ctx):
...     return {"text": input["text"].upper()}
>>> manager = TaskManager(registry=registry)
>>> task_id = manager.add_objective("demo", "Shout hello", "shout", {"text": "hello"})
>>> report = manager.run_sync("demo")
>>> report.status, manager.get_task(task_id).output.data
(<JobStatus.COMPLETED: 'completed'>, {'text': 'HELLO'})
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Coroutine, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import anyio

from dagger_nb._loop import BackgroundGroup, require_loop, run_sync
from dagger_nb.agents._attempt import AttemptRunner
from dagger_nb.agents._dot import job_graph
from dagger_nb.agents._edits import TaskEdits
from dagger_nb.agents._graph import TaskGraph
from dagger_nb.agents._report import tasks_to_frame
from dagger_nb.agents._runner import JobRun
from dagger_nb.agents.job import JobHandle, JobReport, JobUsage, StallAction, StallHandler
from dagger_nb.agents.journal import Journal
from dagger_nb.agents.model import JobStatus, Task, TaskRecord, TaskStatus, TaskType, snapshot
from dagger_nb.agents.registry import TaskAgentRegistry, default_agent_registry
from dagger_nb.agents.store import TaskStore
from dagger_nb.backends import Backend, LocalBackend
from dagger_nb.cache import Cache
from dagger_nb.errors import AgentNotFound, ExecutionError, StorageError, TaskError

if TYPE_CHECKING:
    import pandas as pd

Durability = Literal["at_least_once", "at_most_once"]
RESTARTED = "Task was in progress during system restart"


class TaskManager:
    """Jobs of tasks run by registered agents, optionally persisted to the SQLite file ``db``.

    With ``max_tokens``, a job whose agents report more tokens in all
    (``ctx.record_usage``) fails the task whose attempt took it past the budget.
    Use it as a context manager (``with`` or ``async with``), or call
    :meth:`close` / :meth:`aclose`, to release the database and stop
    background jobs.

    A job runs with ``await manager.run(job_id)`` (async code, a notebook cell),
    ``manager.start(job_id)`` (in the background: a :class:`JobHandle`) or
    ``manager.run_sync(job_id)`` (blocks: scripts).
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
        backend: Backend | None = None,
        max_tokens: int | None = None,
    ) -> None:
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise TaskError(f"heartbeat_interval must be positive (or None), got {heartbeat_interval!r}")
        if max_parallel_tasks < 1:
            raise TaskError(f"max_parallel_tasks must be at least 1, got {max_parallel_tasks!r}")
        if durability not in ("at_least_once", "at_most_once"):
            raise TaskError(f"durability must be 'at_least_once' or 'at_most_once', got {durability!r}")
        if not isinstance(stall_action, StallAction) and not callable(stall_action):
            raise TaskError(f"stall_action must be a StallAction or a callable, got {stall_action!r}")
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):  # a bool is not one
            raise TaskError(f"max_tokens must be a whole number >= 1 (or None), got {max_tokens!r}")
        self.heartbeat_interval = heartbeat_interval
        self.stall_action = stall_action
        self.registry = default_agent_registry if registry is None else registry
        self.max_parallel_tasks = max_parallel_tasks
        self.durability: Durability = durability
        self.cache = Cache() if cache is None else cache
        #: The token budget of each job (every run counted), or None.
        self.max_tokens = max_tokens
        #: Where agents run: None (this process) or a :class:`dagger_nb.DaskBackend`.
        self.backend = None if isinstance(backend, LocalBackend) else backend
        if self.backend is not None and not isinstance(self.backend, Backend):
            raise TaskError(f"backend must be a Backend such as DaskBackend (or None: this process), got {backend!r}")
        self._graph = TaskGraph()
        self._runs: dict[str, JobRun] = {}
        self._background = BackgroundGroup("TaskManager")
        #: why the manager is closed for good (a later one took its file over), or None
        self._closed: str | None = None
        store = TaskStore(db, on_takeover=self._taken_over) if db is not None else None
        self._journal = Journal(store, self._graph.seq)
        self._edits = TaskEdits(self, self._graph, self._journal, self._runs)
        self._attempts = AttemptRunner(self, self._graph, self._journal, self._thread_returned, edits=self._edits)
        if store is not None:
            try:
                self._load(store)
            except BaseException:  # a damaged file: release it
                self._journal.store = None
                store.close()
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
        self, job_id: str, description: str, agent: str, input: dict[str, Any] | None = None, **options: Any
    ) -> str:
        """Add a pending task for ``agent`` to job ``job_id`` and return its id (generated if not given).

        ``options`` are the other fields of :class:`~dagger_nb.agents.TaskSpec`:
        ``dependencies``, ``parent``, ``task_type``, ``task_id``, ``timeout``,
        ``max_retries``, ``acceptance_criteria``. Raises :class:`TaskError` naming
        every problem (empty job id, duplicate task id, self-dependency, unknown
        dependency or parent, unknown option), and :class:`AgentNotFound` listing
        the registered agents. If the job is running, the task is picked up at once.
        """
        self._check_open()
        return self._edits.add_task(job_id, description, agent, input, options)

    def add_dependency(self, task_id: str, depends_on: str) -> None:
        """Make ``task_id`` wait for ``depends_on`` (:class:`DependencyCycleError` lists a cycle)."""
        self._check_open()
        self._edits.add_dependency(task_id, depends_on)

    def update_task_status(self, task_id: str, status: TaskStatus | str, reason: str | None = None) -> None:
        """Set a task's status (accept or reject it, block it, reset it to pending, ...).

        Setting the running task ``BLOCKED`` from its own agent parks it like
        :class:`NeedsDependencies`. In a running job the change is picked up at once.
        """
        self._check_open()
        self._edits.update_task_status(task_id, status, reason)

    # -- reading --------------------------------------------------------------------------

    def get_task(self, task_id: str) -> Task | None:
        """A snapshot of the task, or ``None`` if there is no such task."""
        self._check_open()
        task = self._graph.tasks.get(task_id)
        return None if task is None else snapshot(task, deep=True)

    def tasks(self, job_id: str | None = None) -> list[Task]:
        """Snapshots of every task (of ``job_id``), in creation order."""
        self._check_open()
        return [snapshot(task, deep=True) for task in self._iter_tasks(job_id)]

    def tasks_frame(self, job_id: str | None = None) -> pd.DataFrame:
        """One row per task (of ``job_id``), flat columns (statuses as text, ids comma-separated,
        input and output data as JSON text, the output's error on its own, reported usage)."""
        self._check_open()
        return tasks_to_frame([snapshot(task) for task in self._iter_tasks(job_id)])

    def iter_tasks(self, job_id: str | None = None) -> Iterable[TaskRecord]:
        """The tasks (of ``job_id``) in creation order as the manager holds them, without the copy
        :meth:`tasks` makes: for a view that redraws often (a dashboard) on the job's loop. Read
        them there and then; never change or keep them."""
        self._check_open()
        return self._iter_tasks(job_id)

    def jobs(self) -> list[str]:
        """Every job id, in the order jobs were created."""
        self._check_open()
        return list(self._graph.jobs)

    def job_status(self, job_id: str) -> JobStatus | None:
        """The status of the job's last run (``RUNNING`` after a crash means it was interrupted)."""
        self._check_open()
        self._graph.require_job(job_id)
        return self._graph.job_status.get(job_id)

    def job_usage(self, job_id: str) -> JobUsage:
        """The tokens and cost the job's agents reported, every run counted (kept in the database)."""
        self._check_open()
        return JobUsage(*self._graph.usage(job_id))

    def get_objective(self, job_id: str) -> Task | None:
        """The job's first ``OBJECTIVE`` task, or ``None``."""
        self._check_open()
        for task in self._iter_tasks(job_id):
            if task.task_type is TaskType.OBJECTIVE:
                return snapshot(task, deep=True)
        return None

    def get_dependency_outputs(self, task_id: str) -> list[dict[str, Any]]:
        """The output data of ``task_id``'s dependencies, in dependency order.

        Raises :class:`TaskError` naming every dependency that is not completed.
        """
        self._check_open()
        return self._graph.dependency_outputs(task_id)

    def to_dot(self, job_id: str | None = None) -> str:
        """The tasks (of ``job_id``) as Graphviz DOT: status colours, dependencies, parents dashed."""
        self._check_open()
        graph = self._graph
        jobs = [job_id] if job_id is not None else list(graph.jobs)
        return job_graph({job: graph.job_tasks(job) for job in jobs}, name=job_id)

    # -- running --------------------------------------------------------------------------

    def run(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> Coroutine[Any, Any, JobReport]:
        """Run the job in the calling task until it ends: ``report = await manager.run(job_id)``.

        Only tasks whose agent is in ``allowed_agents`` (when given) run; the
        others stay pending. Where no event loop runs (a script) this raises
        :class:`NoRunningLoop` at once: use :meth:`run_sync` there.
        """
        require_loop("TaskManager.run()", instead="manager.run_sync(job_id)")
        return self._drive(job_id, allowed_agents)

    def start(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> JobHandle:
        """Run the job in the background on the running event loop and return its handle at once.

        ``allowed_agents`` as for :meth:`run`. The run belongs to a task group the
        manager owns until :meth:`aclose`; :class:`NoRunningLoop` where no loop runs.
        """
        require_loop("TaskManager.start()", instead="manager.run_sync(job_id)")
        handle = self._prepare(job_id, allowed_agents)
        self._background.submit(handle._execute, on_drop=handle._dropped, instead="manager.run_sync(job_id)")
        return handle

    def run_sync(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> JobReport:
        """:meth:`run` for synchronous code: blocks until the job ended and returns its report
        (a private loop in a worker thread when a loop is running; an interrupt cancels the job)."""
        self._check_open()
        return run_sync(self._drive, job_id, allowed_agents)

    async def _drive(self, job_id: str, allowed_agents: Iterable[str] | None) -> JobReport:
        handle = self._prepare(job_id, allowed_agents)
        await handle._execute()
        return await handle.wait()

    def run_job(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> Coroutine[Any, Any, JobReport]:
        """Deprecated: use :meth:`run`."""
        _deprecated("run_job", "run")
        return self.run(job_id, allowed_agents=allowed_agents)

    def start_job(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> JobHandle:
        """Deprecated: use :meth:`start`."""
        _deprecated("start_job", "start")
        return self.start(job_id, allowed_agents=allowed_agents)

    def run_job_sync(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> JobReport:
        """Deprecated: use :meth:`run_sync`."""
        _deprecated("run_job_sync", "run_sync")
        return self.run_sync(job_id, allowed_agents=allowed_agents)

    def get_dot_graph(self, job_id: str | None = None) -> str:
        """Deprecated: use :meth:`to_dot`."""
        _deprecated("get_dot_graph", "to_dot")
        return self.to_dot(job_id)

    def running_jobs(self) -> list[str]:
        """The ids of the jobs running now."""
        self._check_open()
        return list(self._runs)

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Release the database; :class:`ExecutionError` if jobs still run (use :meth:`aclose`).

        Nothing to do once a later TaskManager took the file over (it was closed then)."""
        if self._closed is not None:
            return
        if self._runs:
            raise ExecutionError(
                f"jobs still running: {', '.join(sorted(self._runs))}; cancel them or await manager.aclose()"
            )
        self._background.close()
        self._journal.close()

    async def aclose(self) -> None:
        """Cancel background jobs, wait for them to end, and release the database."""
        loop = self._background.loop
        await self._background.aclose()
        running = list(self._runs.values())
        for run in running:
            run.cancel(loop)
        with anyio.move_on_after(10):  # jobs driven by other tasks end promptly once cancelled
            for run in running:
                await run.wait_finished()
        self.close()

    def _taken_over(self) -> None:
        """A newer TaskManager in this process opened our file (a re-run cell): cancel our jobs,
        then flush and close the store, so nothing of ours is written after the newer one loaded it.
        Every public method raises :class:`StorageError` from now on (but closing, which is done)."""
        store = self._journal.store
        where = store.path if store is not None else "the file"
        self._closed = (
            f"this TaskManager is closed: a later TaskManager took '{where}' over in this process; "
            "use the later one"
        )
        # On the jobs' loop when they run there (the take-over may come from another thread): a job
        # flushing its journal must never meet the store closing under it. Jobs share one loop
        # but for a run_sync's private loop; jobs on another loop are cancelled across threads.
        elsewhere = next((run for run in self._runs.values() if run.hop.off_loop), None)
        if elsewhere is not None:
            elsewhere.hop.call(self._stop_for_take_over)
        else:
            self._stop_for_take_over()

    def _stop_for_take_over(self) -> None:
        loop = self._background.loop
        self._background.close()
        for run in list(self._runs.values()):
            run.cancel(loop)  # on their loop; one that had not started yet ends at once
        self._journal.detach()

    def __enter__(self) -> TaskManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> TaskManager:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        store = self._journal.store
        where = store.path if store is not None else "memory"
        return f"<TaskManager {where}: {len(self._graph.tasks)} tasks in {len(self._graph.jobs)} jobs>"

    # -- internals ------------------------------------------------------------------------

    def _load(self, store: TaskStore) -> None:
        tasks, jobs = store.load()
        graph = self._graph
        for seq, task in tasks:
            graph.insert(task, seq)
            if task.status is TaskStatus.IN_PROGRESS:
                if self.durability == "at_least_once":
                    task.status = TaskStatus.PENDING
                    task.retry_count += 1
                    task.status_reason = f"{RESTARTED}; running it again"
                else:
                    task.status = TaskStatus.BLOCKED
                    task.status_reason = RESTARTED
                self._journal.touch(task)
        graph.job_status.update(jobs)
        self._journal.flush()

    def _thread_returned(self, task_id: str) -> None:
        task = self._graph.tasks.get(task_id)
        run = None if task is None else self._runs.get(task.job_id)
        if run is not None:
            run.note_thread_returned(task_id)

    def _iter_tasks(self, job_id: str | None) -> Iterable[TaskRecord]:
        if job_id is None:
            return self._graph.tasks.values()
        return self._graph.job_tasks(job_id)

    def _check_open(self) -> None:
        """:class:`StorageError` once a later TaskManager took the file over: this one keeps
        nothing, so a change made here would silently never reach the file."""
        if self._closed is not None:
            raise StorageError(self._closed)

    def _prepare(self, job_id: str, allowed_agents: Iterable[str] | None) -> JobHandle:
        self._check_open()
        self._journal.check()  # a change made before that could not be written fails the run now
        self._graph.require_job(job_id)
        if job_id in self._runs:
            raise ExecutionError(f"job '{job_id}' is already running")
        allowed = None if allowed_agents is None else frozenset(allowed_agents)
        if allowed is not None:
            unknown = sorted(name for name in allowed if name not in self.registry)
            if unknown:
                raise AgentNotFound(unknown[0], self.registry.names())
        run = JobRun(
            self,
            job_id,
            allowed_agents=allowed,
            graph=self._graph,
            journal=self._journal,
            attempts=self._attempts,
            on_end=partial(self._runs.pop, job_id, None),
        )
        self._runs[job_id] = run
        return JobHandle(job_id, run)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"TaskManager.{old}() is deprecated; use TaskManager.{new}()", DeprecationWarning, stacklevel=3)
