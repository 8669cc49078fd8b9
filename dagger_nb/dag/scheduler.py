"""Drive one run to its end: workers, attempts, retries, timeouts and failure policies (how one call
is made and timed out is :mod:`dagger_nb.dag.calls`; hooks are called by :mod:`dagger_nb.dag.hooks`).

A run is driven by a few long-lived worker tasks (at most
``config.max_parallel_nodes``, started only as ready work appears) that take
node ids from the run's ready queue, never one task per node: creating an
anyio task costs far more than running a trivial action.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections import deque
from functools import partial
from time import time
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb._capture import LazyLogBuffer, start_capture, stop_capture
from dagger_nb._traceback import format_failure
from dagger_nb._workers import open_worker_group
from dagger_nb.backends import LocalBackend, SendsAhead
from dagger_nb.cache import Deferred
from dagger_nb.dag.ahead import Ahead
from dagger_nb.dag.attempts import RetryLog, plural, wait_for_abandoned
from dagger_nb.dag.calls import call_action, hook_name
from dagger_nb.dag.dynamic import SUPERVISOR_ACTION, supervisor_iteration
from dagger_nb.dag.events import (
    NodeCached,
    NodeCancelled,
    NodeFailed,
    NodeRetrying,
    NodeSkipped,
    RunFinished,
)
from dagger_nb.dag.hooks import call_hooks
from dagger_nb.dag.human import PauseForHuman, review_due, review_point
from dagger_nb.dag.journal import NodeJournal
from dagger_nb.dag.node_io import InputMissing, kept_message, readable, resolve_inputs, store_outputs
from dagger_nb.dag.report import NO_TEXTS, ExecutionReport, NodeOutcome, RunStatus
from dagger_nb.dag.run import ADDING_NODE, Run
from dagger_nb.dag.spec import HumanTimeoutAction, NodeSpec, OnFailure
from dagger_nb.errors import DaggerError, DaggerWarning, StorageError, describe_error

if TYPE_CHECKING:
    from dagger_nb.dag.executor import DagExecutor

__all__ = ["Scheduler", "hook_name"]

_DISCARD_SECONDS = 2  # cancelling calls sent ahead must not hold up the end of a run on a lost cluster
_NOT_STARTED = "the run was cancelled before it started"


class Scheduler:
    """Runs the nodes of runs for one :class:`DagExecutor` (its registry, backend, store, hooks)."""

    def __init__(self, executor: DagExecutor) -> None:
        self.executor = executor

    async def drive(self, run: Run, *, cancel: anyio.Event | None = None) -> ExecutionReport:
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or time()
        if self.executor._hooks:
            run.events.add_listener(partial(call_hooks, self.executor, run))
        store = self.executor._store
        if store is not None:
            try:
                await anyio.to_thread.run_sync(partial(store.save_run, run.snapshot(), added_by=dict(run.added_by)))
            except StorageError as failure:
                if run.cancel_requested:  # its executor was closed or taken over meanwhile
                    return await self._finish(run, RunStatus.CANCELLED, "the run was cancelled")
                run.storage_failure = failure
                return await self._finish(run, RunStatus.FAILED, str(failure))
            run.journal = NodeJournal(store, run)
        if run.incremental is not None:
            note = await run.incremental.load(run.spec.name)
            if note is not None:
                run.notes.append(note)
        try:
            backend = self.executor.backend
            # a call sent ahead would run before its node's stored result could be reused
            if (type(backend) is not LocalBackend and isinstance(backend, SendsAhead)  # a protocol check is slow
                    and run.incremental is None and not _any_cached(run)):
                await backend.prepare()
                run.ahead = Ahead(run, backend, self.executor.registry)
            with anyio.CancelScope() as run.cancel_scope:
                if run.cancel_requested:
                    run.cancel_scope.cancel()
                with anyio.move_on_after(run.config.timeout_seconds) as deadline:
                    async with anyio.create_task_group() as watchers:
                        if cancel is not None:
                            watchers.start_soon(_cancel_when_set, cancel, run)
                        if run.journal is not None:
                            watchers.start_soon(self._snapshot_cache, run)
                        async with open_worker_group() as run.group:
                            self._add_workers(run, len(run.ready))
                        run.group = None
                        watchers.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._finish(run, RunStatus.CANCELLED, "the run was cancelled")
            raise
        if run.storage_failure is not None and not run.cancel_requested:
            status, error = RunStatus.FAILED, str(run.storage_failure)
        elif run.cancel_requested:
            status, error = RunStatus.CANCELLED, run.stop_reason or "the run was cancelled"
        elif deadline.cancelled_caught:
            status = RunStatus.FAILED
            error = f"Run timed out after {run.config.timeout_seconds:g}s (config.timeout_seconds)"
        elif run.iteration_limit_hit:
            status = (RunStatus.PAUSED if run.config.human_timeout_action is HumanTimeoutAction.PAUSE
                      else RunStatus.FAILED)
            error = f"Maximum iterations ({run.config.max_iterations}) reached"
        elif run.failed:
            status = RunStatus.PAUSED if run.config.on_failure is OnFailure.PAUSE else RunStatus.FAILED
            first = run.outcomes[run.failed[0]]
            more = f" (and {len(run.failed) - 1} more)" if len(run.failed) > 1 else ""
            error = f"node '{first.node}' failed{more}: {first.error}"
        elif run.waiting_for_human:
            status, error = RunStatus.PAUSED, f"waiting for a person to answer: {run.waiting_for_human}"
        else:
            status, error = RunStatus.SUCCEEDED, None
        return await self._finish(run, status, error)

    async def _finish(self, run: Run, status: RunStatus, error: str | None) -> ExecutionReport:
        if run.ahead is not None:
            with anyio.move_on_after(_DISCARD_SECONDS, shield=True):
                await run.ahead.close()
        for outcome in run.outcomes.values():
            if outcome.status == "running":
                outcome.status = "cancelled"
                outcome.finished_at = time()
        if run.incremental is not None:
            with anyio.CancelScope(shield=True):
                note = await run.incremental.finish(run.spec.name)
            if note is not None:
                run.notes.append(note)
        report = run.finish(status, error)
        if self.executor._store is not None:
            with anyio.CancelScope(shield=True):
                report = await self._record_end(run, report)
        self._announce(run, report)
        late, run.late_hooks = run.late_hooks, []
        for hook, pending, event in late:
            try:
                await pending
            except Exception as failure:  # a hook's bug must not break the caller
                report.notes.append(f"hook {hook_name(hook)} failed on {event}: {describe_error(failure)}")
        return report

    async def _record_end(self, run: Run, report: ExecutionReport) -> ExecutionReport:
        """Write the ended run; if that fails, the run ends ``failed`` with the storage error."""
        store = self.executor._store
        assert store is not None
        journal, run.journal = run.journal, None
        committed = journal.committed if journal is not None else set()
        if store.closed:  # taken over by a later executor, or closed: the run is not a storage failure
            report.notes.append(f"the end of the run was not recorded: the run store '{store.path}' was closed")
            return report
        try:
            await anyio.to_thread.run_sync(partial(store.save_run, report, skip_namespaces=committed,
                                                   added_by=dict(run.added_by)))
        except StorageError as failure:
            run.storage_failure = run.storage_failure or failure
            report = run.finish(RunStatus.FAILED, str(run.storage_failure))
            try:  # a smaller write may still fit
                await anyio.to_thread.run_sync(store.mark_ended, run.run_id, "failed", report.error,
                                               report.finished_at)
            except StorageError as again:
                report.notes.append(f"the end of the run could not be recorded: {again}")
        return report

    def drop(self, run: Run, reason: str = _NOT_STARTED, status: RunStatus = RunStatus.CANCELLED) -> None:
        """End a run that never started (``cancelled``), or broke before its end was recorded."""
        report = run.finish(status, reason)
        if self.executor._store is not None:
            try:
                self.executor._store.save_run(report, added_by=run.added_by)
            except StorageError as failure:
                report.notes.append(f"the run could not be recorded: {failure}")
        self._announce(run, report)
        for _, pending, _ in run.late_hooks:
            if inspect.iscoroutine(pending):
                pending.close()
        run.late_hooks = []

    def _announce(self, run: Run, report: ExecutionReport) -> None:
        status = report.status
        run.events.emit(RunFinished(run.run_id, status, report))
        run.events.close()
        if run.done is not None:
            run.done.set()
        if status == "succeeded":  # it cannot be resumed: its values live only while somebody holds them
            run.release_values()
        self.executor._forget_old_runs()

    def _add_workers(self, run: Run, wanted: int) -> None:
        if run.group is None:
            return
        room = run.limit - run.workers - (run.ahead.waiting if run.ahead is not None else 0)
        for _ in range(min(wanted, room)):
            run.workers += 1
            run.group.start_soon(self._worker, run, name="dagger-nb worker")

    def schedule(self, run: Run, newly_ready: int, *, taking_one: bool) -> None:
        """Start workers (up to the limit) for the ready nodes the calling worker cannot take."""
        spare = newly_ready - (1 if taking_one else 0)
        if spare > 0 and run.workers < run.limit:
            self._add_workers(run, spare)

    async def _worker(self, run: Run) -> None:
        # A worker with nothing ready ends at once (finishing a run of 200 idle workers
        # costs milliseconds); schedule() starts new ones when work appears again.
        ready = run.ready
        try:
            while ready and not run.stopping:
                await self._run_node(run, ready.popleft())
        finally:
            run.workers -= 1

    async def _run_node(self, run: Run, node_id: str) -> None:
        # One coroutine per node, no more: for a trivial action the coroutine layers
        # cost more than the scheduling itself.
        node = run.nodes[node_id]
        outcome = run.outcomes[node_id]
        iteration = supervisor_iteration(node) if node.action == SUPERVISOR_ACTION else None
        if iteration is not None and iteration >= run.iteration_limit:
            run.iteration_limit_hit = True
            run.stopping = True
            run.ready.appendleft(node_id)
            return
        review_note = None
        if iteration is not None and review_due(iteration, run.config.review_frequency):
            review = await review_point(self.executor, run, node, iteration)
            if not review.go_on:
                return
            review_note = review.note
        if run.incremental is not None and await self._reuse(run, node_id):
            return
        outcome.status = "running"
        outcome.started_at = time()
        run.keep_outputs(node_id)
        events = run.events
        emit = events.emit
        attempts = node.attempts(run.config)
        retries = RetryLog(outcome)
        error = ""
        logs = LazyLogBuffer(shown_on=outcome)  # what the action prints or logs, on the outcome once there is any
        outcome.logs, outcome.traceback = NO_TEXTS, None
        written: tuple[str, ...] = ()
        try:
            for attempt in range(1, attempts + 1):
                if attempt > 1:
                    delay = run.config.retry_strategy.delay(attempt=attempt)
                    emit(NodeRetrying(run.run_id, node_id, attempt - 1, error, delay))
                    if delay:
                        await anyio.sleep(delay)
                    else:  # even an action failing without awaiting lets cancel() and timeouts in
                        await anyio.lowlevel.checkpoint()
                if node_id in run.abandoned:
                    await wait_for_abandoned(run, node_id, outcome, attempt)
                outcome.attempts = attempt
                events.started(node_id, attempt)
                try:
                    action = self.executor.registry.get(node.action)
                    kwargs = resolve_inputs(run, node_id, backend=self.executor.backend)
                    if review_note is not None:
                        kwargs["review_note"] = review_note
                    if action.takes_ctx:  # an earlier attempt's writes are not this attempt's
                        run.run_cache.take_written(node_id)
                    capture = start_capture(logs)
                    adding = ADDING_NODE.set(node_id)
                    try:
                        result = await call_action(self.executor, run, node, action=action, kwargs=kwargs,
                                                   attempt=attempt)
                    finally:
                        ADDING_NODE.reset(adding)
                        stop_capture(capture)
                    if node_id in run.over_budget:  # whatever the action did with the budget's error
                        raise _SpentBudget(run.over_budget[node_id])
                    if isinstance(result, Deferred):  # kept elsewhere: fetched if the run store or hooks need it
                        result = await readable(run, result, hooks=bool(self.executor._hooks))
                    outputs, written = store_outputs(run, node, action, result)
                except InputMissing as missing:
                    error = str(missing)
                    retries.add(attempt, error)
                    break
                except PauseForHuman as pause:
                    # Nobody answered: the node goes back to pending and asks again on resume.
                    run.waiting_for_human = pause.prompt
                    outcome.status, outcome.attempts, outcome.started_at = "pending", 0, None
                    run.stopping = True
                    return
                except Exception as exception:  # an action's failure is the node's, never the executor's
                    error = describe_error(exception)
                    outcome.traceback = None if isinstance(exception, _SpentBudget) else format_failure(exception)
                    if node_id in run.over_budget:  # a spent budget is final: no retry
                        error = run.over_budget[node_id]
                        retries.add(attempt, error)
                        break
                    retries.add(attempt, error)
                    continue
                outcome.status = "succeeded"
                outcome.finished_at = time()
                if written:
                    outcome.add_note(kept_message(node_id, written))
                if run.incremental is not None:
                    stored = run.cache.namespace(node_id) if action.takes_ctx else outputs
                    note = await run.incremental.record(run, node_id, stored)
                    if note is not None:
                        outcome.add_note(note)
                if run.journal is not None and not await self._commit(run, node_id, outputs, action.takes_ctx):
                    return
                self._release_dependents(run, node_id)  # first, so a node a hook adds sees this one done
                events.succeeded(node_id, attempt, outputs)
                if written:
                    with contextlib.suppress(DaggerWarning):  # turned into an error, it must not break the run
                        warnings.warn(kept_message(node_id, written), DaggerWarning, stacklevel=1)
                return
        except anyio.get_cancelled_exc_class():
            outcome.status = "cancelled"
            outcome.finished_at = time()
            emit(NodeCancelled(run.run_id, node_id))
            run.drop_outputs(node_id)
            raise
        finally:
            run.done_with_inputs(node_id)
            if not outcome.logs:  # nothing printed: share the one empty list (big runs have many nodes)
                outcome.logs = NO_TEXTS
        outcome.status = "failed"
        outcome.error = run.over_budget.get(node_id) or (
            f"Failed after {plural(outcome.attempts, 'attempt')}. Last error: {error}"
        )
        outcome.finished_at = time()
        if run.journal is not None and not await self._commit(run, node_id, None, False):
            return
        emit(NodeFailed(run.run_id, node_id, outcome.attempts, outcome.error, traceback=outcome.traceback))
        await self._after_failure(run, node, outcome)

    async def _snapshot_cache(self, run: Run) -> None:
        """Every ``config.cache_snapshot_interval`` seconds, store what running ``ctx`` actions have
        written so far, so a crash loses at most that interval of their writes."""
        registry = self.executor.registry
        while True:
            await anyio.sleep(run.config.cache_snapshot_interval)
            journal = run.journal
            if journal is None or journal.failure is not None:
                return
            running = [node_id for node_id, outcome in list(run.outcomes.items())
                       if outcome.status == "running" and run.nodes[node_id].action in registry
                       and registry.get(run.nodes[node_id].action).takes_ctx]
            if running:
                try:
                    await journal.snapshot(running)
                except StorageError:  # the next node commit fails the run with it
                    return

    async def _reuse(self, run: Run, node_id: str) -> bool:
        """In an incremental run: settle ``node_id`` ``cached`` when a stored result matches its
        fingerprint (True), else remember why it runs (False)."""
        incremental = run.incremental
        assert incremental is not None
        registry = self.executor.registry
        node = run.nodes[node_id]
        if node.action not in registry:  # the attempt says so
            return False
        outcome = run.outcomes[node_id]
        try:
            plan = await incremental.plan(run, node_id, registry.get(node.action))
        except Exception as error:  # reuse saves time; a failure to decide must not break the run
            outcome.reason = f"incremental mode could not decide: {describe_error(error)}"
            return False
        if plan.reuse is None:
            return False
        run.keep_outputs(node_id)
        try:
            outputs = await incremental.reuse_stored(run, node_id, plan)
        except Exception as error:  # an unreadable stored result: the node runs
            run.drop_outputs(node_id)
            incremental.not_reused(run, node_id, describe_error(error))
            return False
        outcome.status = "cached"
        outcome.started_at = outcome.finished_at = time()
        run.done_with_inputs(node_id)
        if run.journal is not None and not await self._commit(run, node_id, outputs, False):
            return True
        self._release_dependents(run, node_id)
        run.events.emit(NodeCached(run.run_id, node_id, plan.reuse.run_id, outputs))
        return True

    async def _commit(self, run: Run, node_id: str, outputs: dict[str, Any] | None, whole_namespace: bool) -> bool:
        """Commit the finished node; False (and the run stops, to end ``failed``) if storage failed."""
        assert run.journal is not None
        try:
            await run.journal.commit(node_id, outputs, whole_namespace=whole_namespace)
        except StorageError as failure:
            run.storage_failure = run.storage_failure or failure
            run.stopping = True
            if run.group is not None:
                run.group.cancel_scope.cancel()
            return False
        return True

    def _release_dependents(self, run: Run, node_id: str) -> None:
        ahead = run.ahead
        if ahead is None:
            newly_ready = self._ready_dependents(run, node_id, None)
        else:
            with ahead.batched():  # whatever this sends ahead reaches the cluster as one graph
                newly_ready = self._ready_dependents(run, node_id, ahead)
                ahead.succeeded(node_id)
        if newly_ready:
            # This worker takes one ready node itself; more workers start only for the rest.
            self.schedule(run, newly_ready, taking_one=True)

    def _ready_dependents(self, run: Run, node_id: str, ahead: Ahead | None) -> int:
        """Count ``node_id`` as done for its dependents; how many of them became ready."""
        waiting = run.waiting
        newly_ready = 0
        for dependent in run.dependents[node_id]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0 and run.outcomes[dependent].status == "pending":
                if ahead is not None:
                    ahead.released(dependent)
                run.ready.append(dependent)
                newly_ready += 1
        return newly_ready

    async def _after_failure(self, run: Run, node: NodeSpec, outcome: NodeOutcome) -> None:
        run.failed.append(node.id)
        run.drop_outputs(node.id)
        await self._call_failure_handler(run, node, outcome)
        policy = run.config.on_failure
        if policy is OnFailure.CONTINUE:
            self._skip_downstream(run, node.id)
        elif policy is OnFailure.PAUSE:
            run.stopping = True
        else:
            run.stopping = True
            if run.group is not None:
                run.group.cancel_scope.cancel()

    async def _call_failure_handler(self, run: Run, node: NodeSpec, outcome: NodeOutcome) -> None:
        name = node.failure_handler
        if name is None:
            return
        if name not in self.executor.registry:
            outcome.add_note(f"failure handler '{name}' is not registered; it was not called")
            return
        handler = self.executor.registry.get(name)
        kwargs: dict[str, Any] = {}
        if handler.accepts("error"):
            kwargs["error"] = outcome.error
        try:
            await call_action(self.executor, run, node, action=handler, kwargs=kwargs, attempt=outcome.attempts,
                              handler=True)
        except Exception as exception:  # the handler's failure must not hide the node's
            outcome.add_note(f"failure handler '{name}' failed: {describe_error(exception)}")

    def _skip_downstream(self, run: Run, failed: str) -> None:
        if run.ahead is None:
            self._skip_all_downstream(run, failed)
        else:
            with run.ahead.batched():  # the room freed may let other nodes go ahead: together
                self._skip_all_downstream(run, failed)

    def _skip_all_downstream(self, run: Run, failed: str) -> None:
        queue = deque(run.dependents[failed])
        while queue:
            node_id = queue.popleft()
            outcome = run.outcomes[node_id]
            if outcome.status != "pending":
                continue
            outcome.status = "skipped"
            outcome.error = f"skipped because upstream node '{failed}' failed"
            if run.ahead is not None:
                run.ahead.skipped(node_id)
            run.events.emit(NodeSkipped(run.run_id, node_id, outcome.error))
            run.done_with_inputs(node_id)
            queue.extend(run.dependents[node_id])


class _SpentBudget(DaggerError):
    """The attempt's usage passed the run's token budget: the node fails with the budget's message."""


def _any_cached(run: Run) -> bool:
    return any(outcome.status == "cached" for outcome in run.outcomes.values())


async def _cancel_when_set(event: anyio.Event, run: Run) -> None:
    await event.wait()
    run.cancel()
