"""The kernel's session: the registries, executor, task manager, pub/sub and cache a notebook shares.

Magics and dashboards work on one :class:`Session`. The kernel's session
(:func:`session`) uses the default registries, so actions registered with
``@dagger_nb.action`` and with ``%%dagger_action`` live side by side; tests
build isolated ones with ``Session()``.

A workflow runs as everything in dagger-nb does: ``await session.run(name)`` in
a cell, ``session.start(name)`` in the background (a :class:`RunHandle` at once,
the cell returns), or ``session.run_sync(name)``, which blocks. Work runs on the
kernel's own event loop; background runs are owned by the executor's task
group, jobs by the task manager's; :meth:`Session.aclose` cancels them all. No
loop patching: a blocking wait (``run_sync``, ``--wait``) runs the work on a
private loop in a worker thread while the cell waits.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pandas as pd

from dagger_nb._loop import require_loop, run_sync
from dagger_nb.cache import Cache
from dagger_nb.dag import ActionRegistry, DagExecutor, ExecutionReport, RunHandle, default_registry
from dagger_nb.errors import RunNotFound

if TYPE_CHECKING:
    from dagger_nb.agents import JobHandle, TaskAgentRegistry, TaskManager
    from dagger_nb.pubsub import PubSub, PubSubAgentRegistry, PubSubHandle

T = TypeVar("T")

#: The file a session without ``dag_db`` records runs and stored results in, once it runs incrementally
#: (in the kernel's working folder: the notebook's).
INCREMENTAL_DB = ".dagger-cache.db"

_RUN_COLUMNS = ["run_id", "workflow", "status", "started_at", "finished_at", "nodes", "failed", "error"]


class Session:
    """What a notebook works with: ``registry``, ``executor``, ``cache``, ``runs`` and, built
    on first use, ``agents``, ``task_manager``, ``pubsub_agents`` and ``pubsub``.

    ``db`` is an optional SQLite file for the task manager (jobs survive a kernel
    restart); ``dag_db`` the same for DAG runs. The first incremental run of a session
    without ``dag_db`` opens :data:`INCREMENTAL_DB` in the kernel's working folder (the
    notebook's folder), so stored results outlive a kernel restart.
    """

    def __init__(
        self,
        *,
        registry: ActionRegistry | None = None,
        cache: Cache | None = None,
        agents: TaskAgentRegistry | None = None,
        pubsub_agents: PubSubAgentRegistry | None = None,
        db: str | os.PathLike[str] | None = None,
        dag_db: str | os.PathLike[str] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else ActionRegistry()
        self.cache = cache if cache is not None else Cache()
        self.executor = DagExecutor(self.registry, db=dag_db)
        #: Handles of the runs started in this session, by run id, oldest first.
        self.runs: dict[str, RunHandle] = {}
        self.db = db
        self._agents = agents
        self._pubsub_agents = pubsub_agents
        self._task_manager: TaskManager | None = None
        self._pubsub: PubSub | None = None
        #: Handles of the task jobs started with :meth:`start_job`, by job id.
        self.jobs: dict[str, JobHandle] = {}
        #: The handle of the background delivery started with :meth:`start_pubsub`.
        self.pubsub_handle: PubSubHandle | None = None
        #: Dashboards shown by magics, by run or job id (the latest one for each id).
        self.dashboards: dict[str, Any] = {}

    # -- paradigms built on first use -------------------------------------------------------

    @property
    def agents(self) -> TaskAgentRegistry:
        """The task agent registry (``%%dagger_agent`` registers here)."""
        if self._agents is None:
            from dagger_nb.agents import TaskAgentRegistry

            self._agents = TaskAgentRegistry()
        return self._agents

    @property
    def task_manager(self) -> TaskManager:
        """The session's :class:`~dagger_nb.agents.TaskManager` on :attr:`agents`."""
        if self._task_manager is None:
            from dagger_nb.agents import TaskManager

            self._task_manager = TaskManager(self.db, registry=self.agents, cache=self.cache)
        return self._task_manager

    @property
    def pubsub_agents(self) -> PubSubAgentRegistry:
        """The pub/sub agent registry (``%%dagger_pubsub_agent`` registers here)."""
        if self._pubsub_agents is None:
            from dagger_nb.pubsub import PubSubAgentRegistry

            self._pubsub_agents = PubSubAgentRegistry()
        return self._pubsub_agents

    @property
    def pubsub(self) -> PubSub:
        """The session's :class:`~dagger_nb.pubsub.PubSub` on :attr:`pubsub_agents`."""
        if self._pubsub is None:
            from dagger_nb.pubsub import PubSub

            self._pubsub = PubSub(registry=self.pubsub_agents, cache=self.cache)
        return self._pubsub

    # -- DAG runs ----------------------------------------------------------------------------

    def start(
        self, name: str, *, inputs: Mapping[str, Any] | None = None, incremental: bool | None = None,
        fresh: bool = False,
    ) -> RunHandle:
        """Start workflow ``name`` in the background on the running loop; returns its handle at once.

        ``incremental`` (default: the workflow's ``config.enable_incremental_cache``) reuses the
        stored results of unchanged nodes; ``fresh=True`` runs every node and stores the results.
        Each run reads its own ``inputs``, even while another run of the workflow goes on.
        Where no loop runs (a script) it raises :class:`~dagger_nb.NoRunningLoop`: use :meth:`run_sync`.
        """
        require_loop("Session.start()", instead="session.run_sync(...)")
        if fresh or self._wants_incremental(name, incremental):
            self.incremental_db()
        return self._remember(self.executor.start(name, inputs=inputs, cache=self.cache, incremental=incremental,
                                                  fresh=fresh))

    async def run(
        self, name: str, *, inputs: Mapping[str, Any] | None = None, incremental: bool | None = None,
        fresh: bool = False,
    ) -> ExecutionReport:
        """Run workflow ``name`` and return its report (``await session.run(...)``); options as for
        :meth:`start`. The run is one of the session's (:attr:`runs`, ``%dagger_dashboard``).

        Cancelling the awaiting task cancels the run and waits for it to end, as cancelling
        ``await executor.run(...)`` does: no run goes on without its caller.
        """
        handle = self.start(name, inputs=inputs, incremental=incremental, fresh=fresh)
        try:
            return await handle.wait()
        except BaseException:
            handle.cancel()
            with anyio.CancelScope(shield=True):  # the caller's cancellation must not cut the wait short
                await handle.wait()
            raise

    def run_sync(
        self, name: str, *, inputs: Mapping[str, Any] | None = None, incremental: bool | None = None,
        fresh: bool = False,
    ) -> ExecutionReport:
        """Run workflow ``name`` and block until its report is ready (a script, or a cell without
        ``await``); options as for :meth:`start`.

        In a running kernel the run goes on a private loop in a worker thread while the cell
        waits (see :meth:`wait_sync`).
        """
        return self.wait_sync(lambda: self.start(name, inputs=inputs, incremental=incremental, fresh=fresh))

    def wait_sync(
        self, start: Callable[[], RunHandle], *, on_start: Callable[[RunHandle], object] | None = None
    ) -> ExecutionReport:
        """Call ``start()`` (:meth:`start`, :meth:`start_resume`, ...) and block until that run
        ends; its report. ``on_start(handle)`` is called once the run started (a magic shows
        its dashboard there).

        In a running kernel the run goes on a private loop in a worker thread while the cell
        waits; interrupting the kernel cancels the run, waits for it to end and raises
        ``KeyboardInterrupt``.
        """
        started: list[RunHandle] = []

        async def run_here() -> ExecutionReport:
            handle = start()
            started.append(handle)
            if on_start is not None:
                on_start(handle)
            return await handle.wait()

        def interrupted() -> None:
            for handle in started:
                handle.cancel()

        return run_sync(run_here, on_interrupt=interrupted)

    def start_run(
        self, name: str, *, inputs: Mapping[str, Any] | None = None, incremental: bool | None = None,
        fresh: bool = False,
    ) -> RunHandle:
        """Deprecated: use :meth:`start`."""
        warnings.warn("Session.start_run() is deprecated; use Session.start()", DeprecationWarning, stacklevel=2)
        return self.start(name, inputs=inputs, incremental=incremental, fresh=fresh)

    def _wants_incremental(self, name: str, incremental: bool | None) -> bool:
        if incremental is not None:
            return incremental
        if self.executor.incremental is not None:
            return self.executor.incremental
        return self.executor.workflow(name).config.enable_incremental_cache

    def incremental_db(self) -> str:
        """The file runs and stored results are recorded in: ``dag_db``, or else
        :data:`INCREMENTAL_DB` in the kernel's working folder, opened now if it is not yet."""
        if self.executor.db is None:
            self.executor.use_db(os.path.abspath(INCREMENTAL_DB))
        assert self.executor.db is not None
        return self.executor.db

    def start_resume(self, run_id: str) -> RunHandle:
        """Resume run ``run_id`` in the background (actions as registered now)."""
        return self._remember(self.executor.start_resume(run_id))

    def start_agent_dag(self, task: str, *, inputs: Mapping[str, Any] | None = None) -> RunHandle:
        """Start a supervisor loop for ``task`` (the registered ``supervisor_step`` action) in the
        background; returns at once. See :meth:`DagExecutor.start_agent_dag`."""
        return self._remember(self.executor.start_agent_dag(task, inputs=inputs, cache=self.cache))

    def handle(self, run_id: str) -> RunHandle:
        """The handle of run ``run_id`` (:class:`~dagger_nb.RunNotFound` if unknown)."""
        return self.runs.get(run_id) or self.executor.handle(run_id)

    def latest(self) -> RunHandle | None:
        """The most recently started run, or None."""
        return next(reversed(self.runs.values()), None)

    def latest_resumable(self) -> RunHandle | None:
        """The most recently started (or resumed) run of this session that is paused or failed, or None."""
        return next((h for h in reversed(self.runs.values()) if h.status in ("paused", "failed")), None)

    def knows_run(self, run_id: str) -> bool:
        """Whether ``run_id`` is a run of this session (or of its executor's database)."""
        if run_id in self.runs:
            return True
        try:
            self.executor.handle(run_id)
        except RunNotFound:
            return False
        return True

    def runs_frame(self) -> pd.DataFrame:
        """One row per run started in this session, newest first."""
        rows = []
        for handle in self.runs.values():
            report = handle.snapshot()
            rows.append(
                {
                    "run_id": report.run_id,
                    "workflow": report.workflow,
                    "status": report.status,
                    "started_at": report.started_at,
                    "finished_at": report.finished_at,
                    "nodes": len(report.outcomes),
                    "failed": report.counts().get("failed", 0),
                    "error": report.error,
                }
            )
        frame = pd.DataFrame(rows[::-1], columns=_RUN_COLUMNS)
        for column in ("started_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def _remember(self, handle: RunHandle) -> RunHandle:
        self.runs.pop(handle.run_id, None)
        self.runs[handle.run_id] = handle
        return handle

    # -- task jobs and pub/sub ------------------------------------------------------------------

    def start_job(self, job_id: str, *, allowed_agents: Iterable[str] | None = None) -> JobHandle:
        """Start task job ``job_id`` of :attr:`task_manager` in the background; returns at once."""
        handle = self.task_manager.start(job_id, allowed_agents=allowed_agents)
        self.jobs[job_id] = handle
        return handle

    def job_ids(self) -> list[str]:
        """The task jobs known to :attr:`task_manager` (none, without building it, before first use)."""
        return self._task_manager.jobs() if self._task_manager is not None else []

    def start_objective(
        self,
        job_id: str,
        description: str,
        *,
        agent: str,
        input: Mapping[str, Any] | None = None,
        allowed_agents: Iterable[str] | None = None,
    ) -> JobHandle:
        """Create job ``job_id`` with one objective for ``agent`` and start it in the background.

        Calling it again with the same objective (a re-run cell) creates nothing: it says so and
        returns the existing job's handle (starting the job if this session has not, e.g. after a
        kernel restart with a task database). A job id used for another objective is refused
        (:class:`~dagger_nb.errors.TaskError`): a job keeps its tasks.
        """
        from dagger_nb.errors import TaskError

        inputs = dict(input or {})
        if job_id in self.job_ids():
            manager = self.task_manager
            status = manager.job_status(job_id)
            objective = manager.get_objective(job_id)
            differs = [what for what, same in (
                ("description", objective is not None and objective.description == description),
                ("agent", objective is not None and objective.agent == agent),
                ("input", objective is not None and objective.input == inputs),
            ) if not same]
            if differs:
                raise TaskError(
                    f"job '{job_id}' already exists (status: {status}) with another objective (its "
                    f"{', '.join(differs)} differ{'s' if len(differs) == 1 else ''}); a job keeps its tasks, so to "
                    "start a new job give it another name (in a cell: %%dagger_job NEW_NAME ...)"
                )
            handle = self.jobs.get(job_id)
            if handle is None:
                handle = self.start_job(job_id, allowed_agents=allowed_agents)
            print(f"job '{job_id}' already exists with this objective (status: {status}): showing it; "
                  "nothing new was created (to start another job, give it another name)")
            return handle
        self.task_manager.add_objective(job_id, description, agent, inputs)
        return self.start_job(job_id, allowed_agents=allowed_agents)

    def start_pubsub(self, *, timeout: float | None = None) -> PubSubHandle:
        """Start delivering :attr:`pubsub` messages in the background; returns at once."""
        self.pubsub_handle = self.pubsub.start(timeout=timeout)
        return self.pubsub_handle

    # -- life cycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel every background run, job and pub/sub delivery and wait for them to end."""
        running = [handle for handle in self.runs.values() if not handle.done]
        for handle in running:
            handle.cancel()
        await self.executor.aclose()
        # The executor's group may not own every one of them: a run_sync (or --wait) in between
        # started its run on another loop, so wait for each run here.
        for handle in running:
            with contextlib.suppress(Exception):
                await handle.wait()
        if self._task_manager is not None:
            await self._task_manager.aclose()
        if self._pubsub is not None:
            self._pubsub.stop()
            if self.pubsub_handle is not None:
                with contextlib.suppress(Exception):
                    await self.pubsub_handle.wait()
            self._pubsub.close()
        for dashboard in self.dashboards.values():
            dashboard.close()
        self.dashboards.clear()

    def __repr__(self) -> str:
        return f"<Session {len(self.runs)} run(s), actions: {', '.join(self.registry.names()) or 'none'}>"


_kernel_session: Session | None = None


def session() -> Session:
    """The kernel's session, created on first use on the default registries (actions, task agents,
    pub/sub agents), so decorated functions and cell magics share them."""
    global _kernel_session
    if _kernel_session is None:
        from dagger_nb.agents import default_agent_registry
        from dagger_nb.pubsub import default_pubsub_registry

        _kernel_session = Session(
            registry=default_registry, agents=default_agent_registry, pubsub_agents=default_pubsub_registry
        )
    return _kernel_session


def use_session(new: Session | None) -> Session | None:
    """Make ``new`` the kernel's session (None: a fresh one on next use); returns the previous one."""
    global _kernel_session
    previous, _kernel_session = _kernel_session, new
    return previous


__all__ = ["INCREMENTAL_DB", "Session", "session", "use_session"]
