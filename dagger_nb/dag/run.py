"""The state of one DAG run; the handle a caller holds on it is in :mod:`dagger_nb.dag.handle` (re-exported
here)."""

from __future__ import annotations

import uuid
import weakref
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from functools import partial
from time import time
from typing import TYPE_CHECKING, Any, cast

import anyio

from dagger_nb._gc import collector_paused
from dagger_nb._loop import LoopHop
from dagger_nb._workers import WorkerGroup
from dagger_nb.cache import INPUTS, Cache, RunCache
from dagger_nb.dag.attempts import AbandonedThreads
from dagger_nb.dag.dynamic import SUPERVISOR_ACTION
from dagger_nb.dag.events import DagEvent
from dagger_nb.dag.handle import ADDING_NODE, RunHandle
from dagger_nb.dag.history import RunEvents
from dagger_nb.dag.human import HumanRequest
from dagger_nb.dag.plan import CompiledInput, Plan
from dagger_nb.dag.record import compact_outcomes
from dagger_nb.dag.report import (
    DONE_STATUSES,
    NO_TEXTS,
    ExecutionReport,
    NodeOutcome,
    RunStatus,
    pending_outcomes,
    share_clock,
)
from dagger_nb.dag.spec import DagConfig, NodeSpec, WorkflowSpec
from dagger_nb.errors import CacheKeyError, ExecutionError, StorageError, TokenBudgetExceeded

if TYPE_CHECKING:
    from dagger_nb.dag.ahead import Ahead
    from dagger_nb.dag.incremental import IncrementalRun
    from dagger_nb.dag.journal import NodeJournal

__all__ = ["ADDING_NODE", "CompiledInput", "Plan", "ReleasedCache", "Run", "RunHandle", "new_run_id"]


def new_run_id() -> str:
    """A short unique run id (12 hex characters)."""
    return uuid.uuid4().hex[:12]


class Run:
    """Mutable state of one run: what is ready, running and done. Used only on its loop."""

    def __init__(
        self,
        spec: WorkflowSpec,
        *,
        config: DagConfig,
        cache: Cache,
        inputs: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        outcomes: dict[str, NodeOutcome] | None = None,
        plan: Plan | None = None,
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.spec = spec
        self.config = config
        if not isinstance(cache, RunCache):
            # The run's inputs are its own, shown over the cache its outputs go to; a cache that
            # holds inputs already (a stored run's, or filled by hand) lends them, ``inputs`` win.
            cache = RunCache(cache, {**cache.namespace(INPUTS), **(inputs or {})})
        self.cache: Cache = cache  # a ReleasedCache once a finished run let its values go
        self.plan = plan or Plan.of(spec)
        self._owns_plan = plan is None
        self.nodes: dict[str, NodeSpec] = {node.id: node for node in spec.nodes}
        self.dependencies = self.plan.dependencies
        self.dependents = self.plan.dependents
        #: every node's start and end times (see :func:`~dagger_nb.dag.report.share_clock`)
        self.clock: array[float] = array("d")
        #: the run's usage totals (``ctx.record_usage``): the sum of its nodes'
        self.tokens = 0
        self.cost: float | None = None
        if outcomes:
            self.outcomes = outcomes
            share_clock(outcomes.values(), self.clock)
            self.tokens = sum(outcome.tokens for outcome in outcomes.values())
            costs = [outcome.cost for outcome in outcomes.values() if outcome.cost is not None]
            self.cost = sum(costs) if costs else None
        else:
            with collector_paused():  # one outcome per node, none collectable (see collector_paused)
                self.outcomes = pending_outcomes(((node.id, node.action) for node in spec.nodes), self.clock)
        self.status: RunStatus = RunStatus.PENDING
        #: entered while the run is driven: sync actions in worker threads reach the run's loop through it
        self.hop = LoopHop()
        self.error: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.report: ExecutionReport | None = None
        #: the run succeeded and let go of its values (see :meth:`release_values`)
        self.released = False
        self._full_report: weakref.ref[ExecutionReport] | None = None
        self._handles: weakref.WeakSet[RunHandle] = weakref.WeakSet()
        # Cache namespaces are retained while a node that reads them has not finished,
        # so a size-limited cache never evicts what a pending node needs.
        self._limited_cache = cache.config.max_entries is not None or cache.config.max_memory_mb is not None
        self._released: set[str] = set()
        self.waited_callbacks: list[Callable[[], object]] = []
        #: listeners kept across resumes (each resume starts a new event stream)
        self.followers: list[Callable[[DagEvent], object]] = []
        self.notes: list[str] = []
        self.id_counters: dict[str, int] = {}
        self.supervisor_steps = sum(node.action == SUPERVISOR_ACTION for node in spec.nodes)
        #: added node id -> the node whose action added it (nodes added by hooks or callers are absent):
        #: an addition is stored only with its adder's commit (see NodeJournal)
        self.added_by: dict[str, str] = {}
        self.iteration_limit = config.max_iterations
        #: commits each finished node when the executor has a store (set while the run is driven)
        self.journal: NodeJournal | None = None
        #: the resolved path of the run store file recording the run ("" without one)
        self.store_file = ""
        #: node id -> the attempt of a sync action abandoned after a timeout whose thread still runs
        #: (kept per process, so an executor taking the store file over sees them too)
        self.abandoned = AbandonedThreads(self)
        #: stored results reused and recorded, in an incremental run
        self.incremental: IncrementalRun | None = None
        self._positions: dict[str, int] = {}
        if self._limited_cache:
            cache.retain("inputs")
            for node_id, outcome in self.outcomes.items():
                if outcome.status in DONE_STATUSES:
                    self.keep_outputs(node_id)
        self._prepare(fresh=not outcomes)

    @property
    def run_cache(self) -> RunCache:
        """The run's view of its cache (its own inputs over the shared cache), while it has one."""
        if not isinstance(self.cache, RunCache):
            raise ExecutionError(f"run '{self.run_id}' has released its cache")
        return self.cache

    def reset(self) -> None:
        """Prepare to (re)start: failed, cancelled and skipped nodes become pending again.

        The nodes those added while they ran go (see :meth:`drop_additions_of_reruns`).
        """
        self.drop_additions_of_reruns()
        for node_id, outcome in self.outcomes.items():
            if outcome.status not in DONE_STATUSES:
                if node_id in self._released:  # it will read its inputs again
                    self._released.discard(node_id)
                    for dependency in self.dependencies[node_id]:
                        if self.outcomes[dependency].status in DONE_STATUSES and self._limited_cache:
                            self.cache.retain(dependency)
                outcome.status = "pending"
                outcome.attempts = 0
                outcome.retry_messages = NO_TEXTS
                outcome.error = None
                outcome.started_at = outcome.finished_at = None
                outcome.notes = NO_TEXTS
        self._prepare()

    def drop_additions_of_reruns(self) -> None:
        """Forget the nodes added by nodes that will run again (and what was added by, or depends
        on, those), with their outcomes and values: a node that runs again adds its nodes again,
        from a clean slate, as after a crash (see :class:`~dagger_nb.dag.journal.NodeJournal`)."""
        if not self.added_by:
            return
        rerun = {node_id for node_id, outcome in self.outcomes.items() if outcome.status not in DONE_STATUSES}
        dropped: set[str] = set()
        changed = True
        while changed:
            changed = False
            for node in self.spec.nodes:
                if node.id in dropped:
                    continue
                adder = self.added_by.get(node.id)
                if (adder is not None and (adder in rerun or adder in dropped)) or any(
                    dependency in dropped for dependency in self.dependencies[node.id]
                ):
                    dropped.add(node.id)
                    changed = True
        if not dropped:
            return
        self.spec = self.spec.model_copy(update={"nodes": [n for n in self.spec.nodes if n.id not in dropped]})
        self.plan = Plan.of(self.spec)
        self._owns_plan = True
        self.dependencies, self.dependents = self.plan.dependencies, self.plan.dependents
        held = set(self.cache.namespaces())
        for node_id in dropped:
            del self.nodes[node_id]
            del self.outcomes[node_id]
            self.added_by.pop(node_id, None)
            self._released.discard(node_id)
            if node_id in held:
                self.cache.clear(node_id)
        self.supervisor_steps = sum(node.action == SUPERVISOR_ACTION for node in self.spec.nodes)
        self.id_counters = {}
        self._positions = {}

    def _prepare(self, *, fresh: bool = False) -> None:
        """Ready the run to be driven; ``fresh``: no node has an outcome yet."""
        outcomes = self.outcomes
        if not fresh and any(outcome.status in DONE_STATUSES for outcome in outcomes.values()):
            self.waiting = {
                node_id: sum(outcomes[d].status not in DONE_STATUSES for d in dependencies)
                for node_id, dependencies in self.dependencies.items()
            }
        else:
            self.waiting = {node_id: len(dependencies) for node_id, dependencies in self.dependencies.items()}
        waiting = self.waiting
        self.ready: deque[str] = deque(
            node_id for node_id in self.nodes if waiting[node_id] == 0 and outcomes[node_id].status == "pending"
        )
        self.events: RunEvents = RunEvents(self.run_id)
        for follower in self.followers:
            self.events.add_listener(follower)
        self.failed: list[str] = []
        #: node id -> "token budget exceeded: N of M", for the nodes whose usage passed ``max_tokens``
        self.over_budget: dict[str, str] = {}
        self.workers = 0
        self.stopping = False
        self.cancel_requested = False
        #: Why the run was cancelled, when a person said why (a review point's "stop").
        self.stop_reason: str | None = None
        self.cancel_scope: anyio.CancelScope | None = None
        #: identifies this start of the run (each resume is a new one)
        self.drive = object()
        self.done: anyio.Event | None = None
        self.group: WorkerGroup | None = None
        self.late_hooks: list[tuple[Any, Awaitable[object], str]] = []
        self.iteration_limit_hit = False
        #: the first failure to write to the run store: the run ends ``failed`` with it
        self.storage_failure: StorageError | None = None
        #: what broke the run before its end could be recorded (RunHandle.error)
        self.failure: Exception | None = None
        self.waiting_for_human: str | None = None
        self.questions: dict[str, HumanRequest] = {}
        #: calls sent to the backend before their inputs finished (backends that can: Dask)
        self.ahead: Ahead | None = None

    def position(self, node_id: str) -> int:
        """``node_id``'s place in the workflow (the order its outcome is listed in)."""
        if len(self._positions) != len(self.spec.nodes):
            self._positions = {node.id: index for index, node in enumerate(self.spec.nodes)}
        return self._positions[node_id]

    def grow(self, nodes: list[NodeSpec], *, adder: str | None = None) -> list[str]:
        """Add checked ``nodes`` to the running workflow; returns the ids that are ready at once.

        ``adder``: the node whose action added them (None: a hook or the caller).
        """
        if not self._owns_plan:
            self.plan = self.plan.copy()
            self.dependencies, self.dependents = self.plan.dependencies, self.plan.dependents
            self._owns_plan = True
        self.spec = self.spec.model_copy(update={"nodes": [*self.spec.nodes, *nodes]})
        self.plan.extend(nodes)
        ready = []
        for node in nodes:
            self.nodes[node.id] = node
            self.outcomes[node.id] = outcome = NodeOutcome(node.id, node.action)
            share_clock((outcome,), self.clock)
            if adder is not None:
                self.added_by[node.id] = adder
            waiting = sum(self.outcomes[d].status not in DONE_STATUSES for d in self.dependencies[node.id])
            self.waiting[node.id] = waiting
            if waiting == 0:
                self.ready.append(node.id)
                ready.append(node.id)
        return ready

    def keep_outputs(self, node_id: str) -> None:
        """Retain ``node_id``'s namespace once for each dependent that has yet to read it.

        Called before the node runs, so its outputs are protected from the moment they are written.
        """
        if self._limited_cache:
            for dependent in self.dependents[node_id]:
                if self.outcomes[dependent].status not in DONE_STATUSES:
                    self.cache.retain(node_id)

    def drop_outputs(self, node_id: str) -> None:
        """Undo :meth:`keep_outputs` for a node that did not succeed: nobody will read it."""
        if self._limited_cache:
            for dependent in self.dependents[node_id]:
                if self.outcomes[dependent].status not in DONE_STATUSES:
                    self.cache.release(node_id)

    def done_with_inputs(self, node_id: str) -> None:
        """``node_id`` finished (in any way): its dependencies' outputs may be evicted for it."""
        if self._limited_cache and node_id not in self._released:
            self._released.add(node_id)
            for dependency in self.dependencies[node_id]:
                if self.outcomes[dependency].status in DONE_STATUSES:
                    self.cache.release(dependency)

    def add_usage(
        self, node_id: str, tokens: int, cost: float | None, model: str | None
    ) -> TokenBudgetExceeded | None:
        """Count usage ``node_id``'s action reported (checked); the error if it took the run's total
        past ``config.max_tokens`` (the node then fails, whatever its action does with it)."""
        outcome = self.outcomes[node_id]
        outcome.tokens += tokens
        self.tokens += tokens
        if cost is not None:
            outcome.cost = cost if outcome.cost is None else outcome.cost + cost
            self.cost = cost if self.cost is None else self.cost + cost
        if model is not None and model not in outcome.models:
            outcome.models = (*outcome.models, model)
        budget = self.config.max_tokens
        if budget is not None and tokens and self.tokens > budget:
            exceeded = TokenBudgetExceeded(self.tokens, budget)
            self.over_budget.setdefault(node_id, str(exceeded))
            return exceeded
        return None

    @property
    def limit(self) -> int:
        """How many nodes may run at once."""
        return self.config.parallelism

    def cancel(self, *, reason: str | None = None) -> None:
        """Ask the run to end as ``cancelled`` (with ``reason`` as its error, when given): running
        nodes are cancelled, nothing else starts. From any thread: a cancel scope belongs to the
        loop's thread, so the run's hop carries the call there."""
        if self.hop.off_loop:
            self.hop.call(lambda: self.cancel(reason=reason))
            return
        self.cancel_requested = True
        if reason is not None:
            self.stop_reason = reason
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def release_values(self) -> None:
        """Let go of a succeeded run's values: the executor keeps its record (outcomes, timings,
        usage) for :meth:`DagExecutor.runs`, drawing and handles, but not its cache or events.

        They live on as long as somebody holds them: the report returned to the caller, a
        :class:`RunHandle` (handles alive now keep what they will show), or the cache itself.
        """
        report = self.report
        if report is None or self.released:
            return
        for handle in list(self._handles):
            handle._keep(report, self.events)
        self._handles = weakref.WeakSet()
        self.released = True
        # Once nobody holds the full report, the record's outcomes are kept compactly; not sooner,
        # as the one who holds it holds its outcomes anyway (and a run's end need not wait for it).
        self._full_report = weakref.ref(report, partial(_compact_record, weakref.ref(self)))
        self.report = replace(report, cache=ReleasedCache(self.run_id))
        self.cache = self.report.cache
        self.events = RunEvents(self.run_id)
        self.events.close()
        self.ahead = None
        self.journal = None
        self.questions = {}
        self.nodes, self.waiting, self.ready = {}, {}, deque()
        self._released, self._positions = set(), {}

    def compact_record(self) -> None:
        """Keep the ended run's outcomes as :class:`~dagger_nb.dag.record.CompactOutcomes` (read-only
        from here on): its outcome objects and clock go once nobody else holds them."""
        report = self.report
        if report is None or not self.released:
            return
        record = compact_outcomes(self.spec, report.outcomes)
        if record is report.outcomes:
            return
        self.report = replace(report, outcomes=record)
        # Nothing writes to the outcomes of a succeeded run (it cannot be resumed, grown or reset).
        self.outcomes = cast(dict[str, NodeOutcome], record)
        self.clock = array("d")

    def full_report(self) -> ExecutionReport | None:
        """The final report with its cache: after :meth:`release_values`, only while somebody holds it."""
        if self._full_report is not None:
            return self._full_report() or self.report
        return self.report

    def snapshot(self) -> ExecutionReport:
        """A report of the run as it is now (final once the run has ended)."""
        if self.report is not None:
            return self.report
        return ExecutionReport(
            run_id=self.run_id,
            workflow=self.spec.name,
            status=self.status,
            outcomes=self.outcomes,
            spec=self.spec,
            cache=self.cache,
            error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
            notes=self.notes,
            tokens=self.tokens,
            cost=self.cost,
            max_tokens=self.config.max_tokens,
        )

    def finish(self, status: RunStatus, error: str | None) -> ExecutionReport:
        """Record the end of the run and build its final report."""
        self.status = status
        self.error = error
        self.finished_at = time()
        # The report is a record: a resume of this run must not rewrite it (only an
        # unfinished run can be resumed, so a succeeded one needs no copy).
        outcomes = self.outcomes
        if status != "succeeded":
            outcomes = {node: replace(o, retry_messages=list(o.retry_messages), notes=list(o.notes))
                        for node, o in outcomes.items()}
        self.report = ExecutionReport(
            run_id=self.run_id,
            workflow=self.spec.name,
            status=status,
            outcomes=outcomes,
            spec=self.spec,
            cache=self.cache,
            error=error,
            started_at=self.started_at,
            finished_at=self.finished_at,
            notes=list(self.notes),
            tokens=self.tokens,
            cost=self.cost,
            max_tokens=self.config.max_tokens,
        )
        return self.report


def _compact_record(run: weakref.ref[Run], _: object) -> None:
    alive = run()
    if alive is not None:
        alive.compact_record()


class ReleasedCache(Cache):
    """The cache of a succeeded run's record once its values were released: it holds nothing and
    says why."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def _missing(self, namespace: str, key: str | None = None) -> CacheKeyError:
        error = super()._missing(namespace, key)
        error.args = (f"{error.args[0]}: run '{self.run_id}' has ended and its values were released, as nobody "
                      "held its report, a handle on it or its cache (keep the report, or pass cache=...)",)
        return error
