"""The DAG executor: register workflows, run them on the caller's event loop, grow them.

How a run is driven (workers, attempts, failure policies) lives in :mod:`dagger_nb.dag.scheduler`.

>>> import dagger_nb
>>> registry = dagger_nb.ActionRegistry()
>>> @dagger_nb.action(registry=registry)
... async def add(a, b):
...     return a + b
>>> executor = DagExecutor(registry)
>>> _ = executor.load_yaml('''
... name: sums
... nodes:
...   - id: first
...     action: add
...     inputs: [{name: a, reference: inputs.x}, {name: b, value: 1}]
...     outputs: [{name: sum}]
...   - id: second
...     action: add
...     inputs: [{name: a, reference: first.sum}, {name: b, value: 10}]
... ''')
>>> report = executor.run_sync("sums", inputs={"x": 5})
>>> print(report.status, report.cache.get("second", "result"))
succeeded 16
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb import _loop
from dagger_nb.backends import Backend, LocalBackend
from dagger_nb.cache import Cache
from dagger_nb.dag._runs import RunHistory
from dagger_nb.dag.actions import ActionRegistry, default_registry
from dagger_nb.dag.attempts import store_file
from dagger_nb.dag.dynamic import SUPERVISOR_ACTION, build_nodes
from dagger_nb.dag.events import (
    DagEvent,
    NodeAdded,
    NodeSkipped,
)
from dagger_nb.dag.incremental import StoredResults
from dagger_nb.dag.loader import load_workflow
from dagger_nb.dag.questions import ask_human
from dagger_nb.dag.report import ExecutionReport, RunStatus
from dagger_nb.dag.run import Plan, Run, RunHandle
from dagger_nb.dag.scheduler import Scheduler
from dagger_nb.dag.spec import DagConfig, InputSpec, NodeSpec, OnFailure, WorkflowSpec
from dagger_nb.dag.validation import check_workflow
from dagger_nb.errors import (
    DaggerWarning,
    ExecutionError,
    GraphChangeError,
    Problem,
    RunNotFound,
    WorkflowNotFound,
    WorkflowSpecError,
    describe_error,
)

if TYPE_CHECKING:
    from dagger_nb.dag.results import ResultStore


class DagExecutor(RunHistory, StoredResults):
    """Loads workflows and runs them on the caller's event loop.

    ``registry`` holds the actions (default: :data:`dagger_nb.default_registry`);
    ``config`` is a base :class:`DagConfig` that a workflow's own ``config:``
    keys override; ``db`` is a SQLite file recording every run; ``backend`` is where
    actions run (default: this process; see :class:`dagger_nb.DaskBackend`).

    With ``db``, each node's outcome and outputs are committed as it finishes: after a
    crash, :meth:`resume` re-runs only the nodes that had not finished (at most those
    running at the crash), and the run reads ``interrupted`` in :meth:`runs_frame`. The
    executor holds the file's lock while it is open: another process opening it gets
    :class:`DatabaseInUse` naming the holder; in this process a new executor on the same
    file takes it over (the earlier one's runs are cancelled and its store closed), so
    re-running a notebook cell works. A failed write (a full disk) ends the run
    ``failed`` with the :class:`StorageError` naming the file.

    ``keep_runs`` bounds how many finished runs stay in memory; older ones are forgotten
    here and, with ``db``, still listed, drawn and resumed from the file. Of a succeeded
    run the executor keeps only its record (outcomes, timings, usage): its values (the
    cache, the events with their outputs) live as long as somebody holds the report, a
    :class:`RunHandle` on it or the cache, and go when nobody does. The cache keeps what
    it was asked to keep: a cache you pass in (``cache=``) keeps everything until you clear
    it, one with :class:`CacheConfig` limits keeps within them. A run that can still be
    resumed (failed, paused, cancelled) keeps its values for the resume.

    ``incremental``: True reuses stored node results whose fingerprint matches (nodes read
    ``cached``), False never does, None (the default) follows each workflow's
    ``config.enable_incremental_cache``; a run can override it. Results are stored in
    ``db`` (in memory without one); ``max_cache_mb`` bounds their size, least recently
    used first. See :meth:`clear_cache` and :meth:`invalidate`.

    ``max_tokens`` is a token budget for each run, overriding the workflow's
    ``config.max_tokens``: actions report usage with ``ctx.record_usage(tokens=...)``, and the
    node whose usage takes the run's total past the budget fails with "token budget
    exceeded: N of M" (not retried; the run follows ``on_failure``).
    """

    def __init__(
        self,
        registry: ActionRegistry | None = None,
        *,
        config: DagConfig | None = None,
        db: str | os.PathLike[str] | None = None,
        backend: Backend | None = None,
        keep_runs: int = 100,
        incremental: bool | None = None,
        max_cache_mb: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        if isinstance(keep_runs, bool) or not isinstance(keep_runs, int) or keep_runs < 1:
            raise ExecutionError(f"keep_runs must be a positive whole number, got {keep_runs!r}")
        if backend is not None and not isinstance(backend, Backend):  # say, the Dask client itself
            raise ExecutionError(f"backend must be a Backend such as DaskBackend(client) (or None: this process), "
                                 f"got {backend!r}")
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):  # a bool is not one
            raise ExecutionError(f"max_tokens must be a whole number >= 1 (or None), got {max_tokens!r}")
        #: overrides every workflow's ``config.max_tokens`` when given
        self.max_tokens = max_tokens
        if incremental is not None and not isinstance(incremental, bool):
            raise ExecutionError(f"incremental must be True, False or None, got {incremental!r}")
        if max_cache_mb is not None and (isinstance(max_cache_mb, bool) or not isinstance(max_cache_mb, int | float)
                                         or not max_cache_mb > 0):
            raise ExecutionError(f"max_cache_mb must be a positive number of megabytes, got {max_cache_mb!r}")
        self.incremental = incremental
        self.max_cache_mb = max_cache_mb
        self._results: ResultStore | None = None
        self.keep_runs = keep_runs
        self.registry = registry if registry is not None else default_registry
        self.backend: Backend = backend if backend is not None else LocalBackend()
        self.config = config
        self._workflows: dict[str, WorkflowSpec] = {}
        self._runs: dict[str, Run] = {}
        self._latest: dict[str, str] = {}
        self._plans: dict[str, tuple[WorkflowSpec, Plan]] = {}
        self._store = None
        if db is not None:
            from dagger_nb.dag.store import RunStore  # SQLite only for an executor that records runs

            self._store = RunStore(db, on_takeover=self._taken_over)
        self._background = _loop.BackgroundGroup("DagExecutor")
        self._hooks: list[Callable[[DagEvent, RunHandle], object]] = []
        self._scheduler = Scheduler(self)

    # -- workflows -------------------------------------------------------------------------------

    def load_yaml(self, text_or_path: str | os.PathLike[str]) -> WorkflowSpec:
        """Load a workflow from YAML text or a file, check its actions, and register it."""
        spec = load_workflow(text_or_path, actions=self.registry)
        return self._register(spec)

    def load_yaml_file(self, path: str | os.PathLike[str]) -> WorkflowSpec:
        """Load and register the workflow in the file at ``path``."""
        if isinstance(path, str) and not os.path.isfile(path):
            raise WorkflowSpecError([Problem(path, None, None, None, "file not found")])
        return self.load_yaml(os.fspath(path))

    def add_workflow(self, spec: WorkflowSpec) -> WorkflowSpec:
        """Register a workflow built in Python, after the same checks as a file gets."""
        problems = [
            Problem(None, None, spec.name, spec.nodes[index].id if index is not None else None, message)
            for message, index, _ in check_workflow(spec, actions=self.registry)
        ]
        if problems:
            raise WorkflowSpecError(problems)
        return self._register(spec)

    def _register(self, spec: WorkflowSpec) -> WorkflowSpec:
        for node in spec.nodes:
            handler = node.failure_handler
            if handler is not None and handler not in self.registry:
                warnings.warn(
                    f"workflow '{spec.name}', node '{node.id}': failure handler '{handler}' is not "
                    "registered; it will not be called",
                    DaggerWarning,
                    stacklevel=3,
                )
        self._workflows[spec.name] = spec
        self._plan(spec)  # built with the workflow, once, so runs share it
        return spec

    def workflow(self, name: str) -> WorkflowSpec:
        """The registered workflow ``name``; :class:`WorkflowNotFound` listing the known ones."""
        try:
            return self._workflows[name]
        except KeyError:
            raise WorkflowNotFound(name, self._workflows) from None

    def list_dags(self) -> list[tuple[str, str]]:
        """``(name, description)`` of every registered workflow."""
        return [(spec.name, spec.description or "") for spec in self._workflows.values()]

    # -- running ---------------------------------------------------------------------------------

    def run(
        self,
        name: str,
        cache: Cache | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        cancel: anyio.Event | None = None,
        incremental: bool | None = None,
        fresh: bool = False,
    ) -> Coroutine[Any, Any, ExecutionReport]:
        """Run workflow ``name`` to the end: ``report = await executor.run(name, inputs={...})``.

        ``inputs`` belong to the run (its cache shows them as namespace ``inputs``; ``cache``
        itself, shared or not, only receives outputs); setting ``cancel`` ends the
        run ``cancelled``. ``incremental`` overrides the executor's choice for this run;
        ``fresh=True`` runs every node and stores the results for the next incremental run.
        Where no event loop runs (a script) this raises :class:`NoRunningLoop` at once:
        use :meth:`run_sync` there.
        """
        _loop.require_loop("DagExecutor.run()", instead="executor.run_sync(...)")
        return self._run(name, cache, inputs=inputs, cancel=cancel, incremental=incremental, fresh=fresh)

    def run_sync(
        self, name: str, cache: Cache | None = None, *, inputs: Mapping[str, Any] | None = None,
        incremental: bool | None = None, fresh: bool = False,
    ) -> ExecutionReport:
        """:meth:`run`, blocking until the report is there (a script, or a cell without ``await``)."""
        return _loop.run_sync(partial(self._run, name, cache, inputs=inputs, incremental=incremental, fresh=fresh))

    def start(
        self, name: str, *, inputs: Mapping[str, Any] | None = None, cache: Cache | None = None,
        incremental: bool | None = None, fresh: bool = False,
    ) -> RunHandle:
        """Start workflow ``name`` in the background on the running loop and return its handle at once."""
        _loop.require_loop("DagExecutor.start()", instead="executor.run_sync(...)")
        run = self._new_run(name, cache=cache, inputs=inputs, incremental=incremental, fresh=fresh)
        return self._submit(run, instead="executor.run_sync(...)")

    def execute_dag(
        self, name: str, cache: Cache | None = None, *, inputs: Mapping[str, Any] | None = None,
        cancel: anyio.Event | None = None, incremental: bool | None = None, fresh: bool = False,
    ) -> Coroutine[Any, Any, ExecutionReport]:
        """Deprecated: use :meth:`run` (``await executor.run(...)``)."""
        warnings.warn("DagExecutor.execute_dag() is deprecated; use DagExecutor.run()", DeprecationWarning,
                      stacklevel=2)
        return self._run(name, cache, inputs=inputs, cancel=cancel, incremental=incremental, fresh=fresh)

    async def _run(
        self, name: str, cache: Cache | None, *, inputs: Mapping[str, Any] | None,
        cancel: anyio.Event | None = None, incremental: bool | None = None, fresh: bool = False,
    ) -> ExecutionReport:
        run = self._new_run(name, cache=cache, inputs=inputs, incremental=incremental, fresh=fresh)
        return await self._drive(run, cancel=cancel)

    async def _drive(self, run: Run, *, cancel: anyio.Event | None = None) -> ExecutionReport:
        # Entered for the whole run: a sync action in a worker thread adds nodes and records
        # usage on this loop's thread through it.
        with run.hop.entered():
            try:
                return await self._scheduler.drive(run, cancel=cancel)
            except Exception as error:
                if run.report is not None:
                    raise
                # It broke before the scheduler could record an end (a backend that cannot reach
                # its cluster, say): the run ends failed instead of reading "running" for ever.
                run.failure = error
                self._scheduler.drop(run, f"the run could not go on: {describe_error(error)}", RunStatus.FAILED)
                assert run.report is not None
                return run.report
            except BaseException:
                if run.report is None:  # cancelled before the scheduler took the run in hand
                    self._scheduler.drop(run, "the run was cancelled")
                raise

    def _submit(self, run: Run, *, instead: str) -> RunHandle:
        self._background.submit(self._drive, run, on_drop=partial(self._scheduler.drop, run), instead=instead)
        return RunHandle(run, self)

    async def resume(self, run_id: str) -> ExecutionReport:
        """Continue a paused, failed, cancelled or interrupted run: succeeded nodes keep their
        outputs, the others run again with the actions as registered now."""
        run = self._resumable(run_id)
        return await self._drive(run)

    def resume_sync(self, run_id: str) -> ExecutionReport:
        """:meth:`resume` for scripts (and cells without ``await``)."""
        return _loop.run_sync(self.resume, run_id)

    def start_resume(self, run_id: str) -> RunHandle:
        """Like :meth:`resume`, but in the background; returns at once."""
        _loop.require_loop("DagExecutor.start_resume()", instead="executor.resume_sync(...)")
        return self._submit(self._resumable(run_id), instead="executor.resume_sync(...)")

    def handle(self, run_id: str) -> RunHandle:
        """A handle on run ``run_id`` of this process; :class:`RunNotFound` when there is none."""
        try:
            return RunHandle(self._runs[run_id], self)
        except KeyError:
            raise RunNotFound(run_id) from None

    # -- growing workflows, supervisors, people ---------------------------------------------------

    def add_hook(self, hook: Callable[[DagEvent, RunHandle], object]) -> None:
        """Call ``hook(event, run)`` for every event of every run started from now on.

        ``hook`` may be sync or async and may call ``run.add_node(...)``; a run ends only
        after its async hooks have finished. A hook that raises is noted in the report's
        ``notes`` and never stops the run.

        >>> import dagger_nb
        >>> executor = DagExecutor(dagger_nb.ActionRegistry())
        >>> def double_big_sums(event, run):
        ...     if isinstance(event, dagger_nb.NodeSucceeded) and event.outputs.get("result", 0) > 10:
        ...         run.add_node("multiply", id=f"multiply_{event.node}",
        ...                      inputs={"x": f"{event.node}.result"}, dependencies=[event.node])
        >>> executor.add_hook(double_big_sums)
        """
        self._hooks.append(hook)

    def remove_hook(self, hook: Callable[[DagEvent, RunHandle], object]) -> None:
        """Stop calling ``hook``."""
        self._hooks.remove(hook)

    def run_agent_dag(
        self, task: str, *, inputs: Mapping[str, Any] | None = None, cache: Cache | None = None
    ) -> Coroutine[Any, Any, ExecutionReport]:
        """Run a supervisor loop for ``task``: ``report = await executor.run_agent_dag(task)``. It is
        a workflow named ``task`` whose one node runs the registered action ``supervisor_step``
        with ``iteration=0``.

        Each step may add tool nodes and the next ``supervisor_step`` (depending on them) with
        ``ctx.add_node``; it receives ``iteration`` 1, 2, ... automatically. A step that adds
        nothing ends the run. ``config.max_iterations`` bounds the number of steps. Where no
        event loop runs this raises :class:`NoRunningLoop`: use :meth:`run_agent_dag_sync`.
        """
        _loop.require_loop("DagExecutor.run_agent_dag()", instead="executor.run_agent_dag_sync(...)")
        return self._run(self._supervisor_workflow(task), cache, inputs=inputs)

    def run_agent_dag_sync(
        self, task: str, *, inputs: Mapping[str, Any] | None = None, cache: Cache | None = None
    ) -> ExecutionReport:
        """:meth:`run_agent_dag`, blocking until the report is there (scripts)."""
        return self.run_sync(self._supervisor_workflow(task), cache, inputs=inputs)

    def start_agent_dag(
        self, task: str, *, inputs: Mapping[str, Any] | None = None, cache: Cache | None = None
    ) -> RunHandle:
        """:meth:`run_agent_dag` in the background; returns its handle at once."""
        _loop.require_loop("DagExecutor.start_agent_dag()", instead="executor.run_agent_dag_sync(...)")
        return self.start(self._supervisor_workflow(task), inputs=inputs, cache=cache)

    def execute_agent_dag(
        self, task: str, *, inputs: Mapping[str, Any] | None = None, cache: Cache | None = None
    ) -> Coroutine[Any, Any, ExecutionReport]:
        """Deprecated: use :meth:`run_agent_dag` (``await executor.run_agent_dag(...)``)."""
        warnings.warn("DagExecutor.execute_agent_dag() is deprecated; use DagExecutor.run_agent_dag()",
                      DeprecationWarning, stacklevel=2)
        return self._run(self._supervisor_workflow(task), cache, inputs=inputs)

    def _supervisor_workflow(self, task: str) -> str:
        if SUPERVISOR_ACTION not in self.registry:
            raise ExecutionError(
                f"an agent workflow needs an action named '{SUPERVISOR_ACTION}' "
                f"(registered: {', '.join(self.registry.names()) or 'none'})"
            )
        if not isinstance(task, str) or not task.strip():
            raise ExecutionError("the task of an agent workflow must be non-empty text")
        existing = self._workflows.get(task)
        if existing is not None and existing.description != "supervisor loop":
            raise ExecutionError(f"a workflow named '{task}' is already registered; give the task another name")
        first = NodeSpec(id=f"{SUPERVISOR_ACTION}_1", action=SUPERVISOR_ACTION,
                         inputs=[InputSpec(name="iteration", value=0)])
        self._workflows[task] = WorkflowSpec(name=task, description="supervisor loop", nodes=[first],
                                             config=self.config or DagConfig())
        return task

    def _grow(self, run: Run, requests: list[Mapping[str, Any]], adder: str | None = None) -> list[str]:
        """Add nodes to ``run`` while it runs (all or none); returns their ids. ``adder``: the node
        whose action adds them."""
        if run.group is None or run.status != "running":
            raise GraphChangeError(
                f"run '{run.run_id}' is {run.status}: nodes can only be added while it runs"
            )
        if not isinstance(requests, list | tuple) or not all(isinstance(r, Mapping) for r in requests):
            raise GraphChangeError("add_nodes takes a list of mappings with add_node's arguments")
        nodes = build_nodes(list(requests), existing=run.nodes, actions=self.registry.names(),
                            counters=run.id_counters, supervisor_steps=run.supervisor_steps)
        run.supervisor_steps += sum(node.action == SUPERVISOR_ACTION for node in nodes)
        ready = run.grow(nodes, adder=adder)
        for node in nodes:
            run.events.emit(NodeAdded(run.run_id, node.id, node.action, list(run.dependencies[node.id])))
            failed_upstream = [d for d in run.dependencies[node.id]
                               if run.outcomes[d].status in ("failed", "skipped", "cancelled")]
            if failed_upstream and run.config.on_failure is OnFailure.CONTINUE:
                outcome = run.outcomes[node.id]
                outcome.status = "skipped"
                outcome.error = f"skipped because upstream node '{failed_upstream[0]}' failed"
                run.events.emit(NodeSkipped(run.run_id, node.id, outcome.error))
        if ready:
            self._scheduler.schedule(run, len(ready), taking_one=False)
        return [node.id for node in nodes]

    #: ask a person during a run (``ctx.ask_human`` and supervisor reviews call it through the executor)
    _ask_human = staticmethod(ask_human)

    async def aclose(self) -> None:
        """Cancel every background run and wait for them to end."""
        await self._background.aclose()

    async def __aenter__(self) -> DagExecutor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
        self.close()

    def close(self) -> None:
        """Close the database and give its lock up (background runs must have ended)."""
        if self._results is not None:
            self._results.close()
        if self._store is not None:
            self._store.close()

    def _taken_over(self) -> None:
        """A later executor of this process opened the same file: stop this one's runs, close it."""
        for run in self._runs.values():
            if run.status in ("pending", "running") and run.report is None:
                run.notes.append("a later DagExecutor of this process took its run store over")
                run.cancel()
        if self._results is not None:
            self._results.close()
        if self._store is not None:
            self._store.close(reason="a later DagExecutor of this process took the file over")

    # -- internals -------------------------------------------------------------------------------

    def _effective_config(self, spec: WorkflowSpec) -> DagConfig:
        config = spec.config
        if self.config is not None:
            overrides = {key: getattr(spec.config, key) for key in spec.config.model_fields_set}
            config = self.config.model_copy(update=overrides)
        if self.max_tokens is not None:
            config = config.model_copy(update={"max_tokens": self.max_tokens})
        return config

    def _new_run(
        self, name: str, *, cache: Cache | None, inputs: Mapping[str, Any] | None,
        incremental: bool | None = None, fresh: bool = False,
    ) -> Run:
        spec = self.workflow(name)
        if not spec.nodes:
            raise ExecutionError(f"workflow '{name}' has no nodes; there is nothing to run")
        cache = cache if cache is not None else Cache()
        run = Run(spec, config=self._effective_config(spec), cache=cache, inputs=inputs, plan=self._plan(spec))
        run.store_file = store_file(self.db)
        self._make_incremental(run, incremental, fresh=fresh)
        self._runs[run.run_id] = run
        self._latest[spec.name] = run.run_id
        return run

    def _plan(self, spec: WorkflowSpec) -> Plan:
        cached = self._plans.get(spec.name)
        if cached is None or cached[0] is not spec:
            cached = self._plans[spec.name] = (spec, Plan.of(spec))
        return cached[1]

    def _resumable(self, run_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None and self._store is not None:
            run = self._store.load_run(run_id, config_for=self._effective_config)
            if run is not None:
                run.store_file = store_file(self._store.path)
                self._runs[run_id] = run
        if run is None:
            raise RunNotFound(run_id)
        if run.status == "running":
            raise ExecutionError(
                f"run '{run_id}' of workflow '{run.spec.name}' is still running in this process "
                f"(pid {os.getpid()}); wait for it or cancel it before resuming"
            )
        if run.status not in ("paused", "failed", "cancelled", "interrupted"):
            raise ExecutionError(
                f"run '{run_id}' of workflow '{run.spec.name}' is {run.status}; "
                "only paused, failed, cancelled or interrupted runs can be resumed"
            )
        run.status = RunStatus.RUNNING  # a second resume of the same run is refused from here on
        if run.iteration_limit_hit:
            # A person chose to go on: allow another max_iterations supervisor steps.
            run.iteration_limit += run.config.max_iterations
        run.report = None
        run.reset()
        if run.incremental is None:
            self._make_incremental(run, None, fresh=False)
        return run
