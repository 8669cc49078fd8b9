"""Incremental runs: a node whose fingerprint matches a stored result is not run again.

A node's fingerprint combines its action's code, its resolved input values and its
settings that change what it computes (see :mod:`dagger_nb.dag.fingerprint` and the
"Incremental runs" section of docs/workflow-format.md). Before a node runs, the
scheduler asks :meth:`IncrementalRun.plan`; when a stored result matches, the node is
settled ``cached`` with the stored outputs. After a node succeeds,
:meth:`IncrementalRun.record` stores its result and the fingerprints of its outputs;
its dependents fingerprint their inputs with those, so a node re-run with the same
outputs lets its dependents be reused.

Each node's outcome says why it ran or was reused (:attr:`NodeOutcome.reason`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb._callables import OutputPrints, node_outputs
from dagger_nb.dag import fingerprint
from dagger_nb.dag.dynamic import SUPERVISOR_ACTION
from dagger_nb.dag.fingerprint import Unfingerprintable, code_fingerprint, digest, is_big, value_fingerprint
from dagger_nb.dag.node_io import InputMissing, resolve_inputs
from dagger_nb.errors import ExecutionError, StorageError

if TYPE_CHECKING:
    from dagger_nb.dag.actions import Action
    from dagger_nb.dag.results import ResultStore, StoredResult
    from dagger_nb.dag.run import Run
    from dagger_nb.dag.spec import NodeSpec, WorkflowSpec
    from dagger_nb.dag.store import RunStore


#: what a node's reason starts with when it was reused
REUSED = "reused from run"
NO_RESULT = "no stored result"


@dataclass(slots=True)
class NodePlan:
    """What was decided for one node before it ran."""

    reason: str
    #: None: the node's result cannot be stored (why is in ``reason``)
    fingerprint: str | None = None
    code: str = ""
    settings: str = ""
    inputs: dict[str, str] | None = None
    #: the stored result to reuse, when one matches
    reuse: StoredResult | None = None


def settings_fingerprint(node: NodeSpec) -> str:
    """The node settings that change what it computes: its action's name, its declared outputs
    (how a result becomes outputs) and its instructions. Timeouts, attempts, retries and
    descriptions do not count."""
    instructions = node.instructions if not isinstance(node.instructions, list) else tuple(node.instructions)
    return value_fingerprint((node.action, tuple(o.name for o in node.outputs), instructions))


class IncrementalRun:
    """The incremental state of one run: stored results, value fingerprints, each node's plan.

    Used only on the run's loop (hashing big values and store calls go to worker threads).
    """

    def __init__(self, results: ResultStore, *, reuse: bool = True) -> None:
        self.results = results
        #: False for a fresh run: every node runs, and its result is stored for the next run
        self.allow_reuse = reuse
        self._stored: dict[str, list[StoredResult]] = {}
        #: namespace -> key -> fingerprint of each output seen this run
        self._prints: dict[str, dict[str, str]] = {}
        self._plans: dict[str, NodePlan] = {}
        #: node -> the request that its big outputs be fingerprinted where its action runs
        self._remote_prints: dict[str, OutputPrints] = {}
        self._used: list[tuple[str, str]] = []
        #: node -> why its result must not be stored (it added nodes, asked a person)
        self.unstorable: dict[str, str] = {}
        self.loaded = False

    async def load(self, workflow: str) -> str | None:
        """Read the stored results of ``workflow``; a note if the store could not be read."""
        try:
            self._stored = await anyio.to_thread.run_sync(self.results.results, workflow)
        except StorageError as error:
            self._stored = {}
            return f"incremental mode: stored results could not be read, every node runs: {error}"
        finally:
            self.loaded = True
        return None

    async def plan(self, run: Run, node_id: str, action: Action) -> NodePlan:
        """Decide whether ``node_id`` can be reused, and remember why (its outcome's ``reason``)."""
        plan = await self._plan(run, node_id, action)
        self._plans[node_id] = plan
        run.outcomes[node_id].reason = plan.reason
        return plan

    async def _plan(self, run: Run, node_id: str, action: Action) -> NodePlan:
        node = run.nodes[node_id]
        if not action.cache:
            return NodePlan(f"action '{action.name}' is never reused (cache=False)")
        if node.action == SUPERVISOR_ACTION:
            return NodePlan("supervisor steps are never reused")
        try:
            code = code_fingerprint(action.fn)
        except Unfingerprintable as error:
            return NodePlan(f"the code of action '{action.name}' could not be fingerprinted: {error}")
        settings = settings_fingerprint(node)
        try:
            values = resolve_inputs(run, node_id)  # as the action will get them
        except InputMissing as missing:
            return NodePlan(str(missing))
        inputs: dict[str, str] = {}
        for name, namespace, key, _, _ in run.plan.inputs[node_id]:
            known = self._prints.get(namespace, {}).get(key) if namespace is not None else None
            if known is not None:
                inputs[name] = known
                continue
            try:
                inputs[name] = await _fingerprint(values[name])
            except Unfingerprintable as error:
                return NodePlan(f"input '{name}' could not be fingerprinted ({error}); its result is not stored")
            if namespace is not None:
                self._prints.setdefault(namespace, {})[key] = inputs[name]
        if action.takes_ctx:  # it may read its dependencies' outputs itself, through ctx.cache
            for dependency in run.dependencies[node_id]:
                try:
                    inputs[f"<{dependency}>"] = await self._namespace_print(run, dependency)
                except Unfingerprintable as error:
                    return NodePlan(f"the outputs of dependency '{dependency}' could not be fingerprinted "
                                    f"({error}); its result is not stored")
        fingerprint = digest(code, settings, *(f"{name}={inputs[name]}" for name in sorted(inputs)))
        stored = self._stored.get(node_id, [])
        match = next((result for result in stored if result.fingerprint == fingerprint), None)
        if match is not None and self.allow_reuse:
            return NodePlan(f"{REUSED} {match.run_id}", fingerprint, code, settings, inputs, reuse=match)
        reason = "a fresh run was asked for" if not self.allow_reuse else _what_changed(stored, code, settings, inputs)
        return NodePlan(reason, fingerprint, code, settings, inputs)

    async def _namespace_print(self, run: Run, namespace: str) -> str:
        known = dict(self._prints.get(namespace, {}))
        values = run.cache.namespace(namespace)
        for key, value in values.items():
            if key not in known:
                known[key] = await _fingerprint(value)
        return digest(*(f"{key}={known[key]}" for key in sorted(known)))

    async def reuse_stored(self, run: Run, node_id: str, plan: NodePlan) -> dict[str, Any]:
        """The stored outputs of ``node_id`` (inserted in the run's cache); :class:`StorageError` if
        they cannot be read (the node then runs)."""
        assert plan.reuse is not None
        stored = plan.reuse
        values = await anyio.to_thread.run_sync(self.results.load_values, stored)
        for key, value in values.items():
            run.cache.insert(node_id, key, value)
            self._prints.setdefault(node_id, {})[key] = stored.outputs.get(key) or value_fingerprint(value)
        run.outcomes[node_id].cached_from = stored.run_id
        self._used.append((node_id, stored.fingerprint))
        return values

    def not_reused(self, run: Run, node_id: str, error: str) -> None:
        """Reading a stored result failed: the node runs, and its outcome says why."""
        plan = self._plans.get(node_id)
        if plan is not None:
            plan.reuse = None
            plan.reason = f"its stored result could not be read ({error})"
            run.outcomes[node_id].reason = plan.reason

    def output_prints(self, node: NodeSpec, action: Action) -> OutputPrints | None:
        """For a backend that runs ``node``'s action elsewhere: the request that the worker
        fingerprint its big outputs (see :meth:`record`); None when its result will not be stored
        or the action takes ``ctx`` (its namespace is then more than its result)."""
        plan = self._plans.get(node.id)
        if plan is None or plan.fingerprint is None or action.takes_ctx:
            return None
        request = OutputPrints(partial(node_outputs, node.id, tuple(o.name for o in node.outputs)),
                               fingerprint.is_big, fingerprint.value_fingerprint)
        self._remote_prints[node.id] = request  # each attempt's replaces the last one's
        return request

    async def record(self, run: Run, node_id: str, values: dict[str, Any]) -> str | None:
        """Store ``node_id``'s result (``values``: its cache namespace) and remember its outputs'
        fingerprints; returns a note when it could not be stored. Outputs the worker that ran
        the action fingerprinted (:meth:`output_prints`) are not hashed again here."""
        plan = self._plans.pop(node_id, None)
        why_not = self.unstorable.pop(node_id, None)
        remote = self._remote_prints.pop(node_id, None)
        if plan is None or plan.fingerprint is None or plan.inputs is None:
            return None
        if why_not is not None:
            return f"its result is not stored: {why_not}"
        from dagger_nb.dag.results import StoredResult  # SQLite only for incremental runs

        result = StoredResult(run.spec.name, node_id, plan.fingerprint, plan.code, plan.settings, plan.inputs,
                              {}, run.run_id)
        known = {key: fp for key, fp in remote.found.items() if key in values} if remote is not None else {}
        try:
            if any(is_big(value) for key, value in values.items() if key not in known):
                await anyio.to_thread.run_sync(_store, self.results, result, values, known)
            else:
                # small values: hashing on the loop is cheaper than a thread hop; the write is not
                result.outputs = _output_prints(values, known)
                await anyio.to_thread.run_sync(self.results.save, result, values)
        except Unfingerprintable as error:
            return f"its result is not stored: an output could not be fingerprinted ({error})"
        except Exception as error:  # a value's own pickling or hashing can raise anything
            return f"its result could not be stored: {error}"
        finally:
            self._prints.setdefault(node_id, {}).update(result.outputs)
        return None

    async def finish(self, workflow: str) -> str | None:
        """Mark the reused results as used (least recently used eviction); a note if that failed."""
        used, self._used = self._used, []
        if not used:
            return None
        try:
            await anyio.to_thread.run_sync(self.results.touch, workflow, used)
        except StorageError as error:
            return f"incremental mode: could not mark reused results as used: {error}"
        return None


def _store(results: ResultStore, result: StoredResult, values: dict[str, Any], known: dict[str, str]) -> None:
    result.outputs = _output_prints(values, known)
    results.save(result, values)


def _output_prints(values: dict[str, Any], known: dict[str, str]) -> dict[str, str]:
    return {key: known[key] if key in known else value_fingerprint(value) for key, value in values.items()}


async def _fingerprint(value: Any) -> str:
    if is_big(value):
        return await anyio.to_thread.run_sync(value_fingerprint, value)
    return value_fingerprint(value)


def _what_changed(stored: list[StoredResult], code: str, settings: str, inputs: dict[str, str]) -> str:
    if not stored:
        return NO_RESULT
    latest = stored[0]
    if latest.code != code:
        return "code changed"
    if latest.settings != settings:
        return "settings changed"
    changed = sorted(name for name in set(inputs) | set(latest.inputs) if inputs.get(name) != latest.inputs.get(name))
    shown = [name.strip("<>") for name in changed]
    if len(changed) == 1:
        what = "outputs of dependency" if changed[0].startswith("<") else "input"
        return f"{what} '{shown[0]}' changed"
    if changed:
        return f"inputs {', '.join(repr(name) for name in shown)} changed"
    return NO_RESULT


class StoredResults:
    """What :class:`~dagger_nb.dag.executor.DagExecutor` offers for incremental runs: its stored
    results, where they live, and forgetting them."""

    incremental: bool | None
    max_cache_mb: float | None
    _store: RunStore | None
    _results: ResultStore | None
    _workflows: dict[str, WorkflowSpec]

    def _taken_over(self) -> None:
        raise NotImplementedError  # the executor's

    def use_db(self, db: str | os.PathLike[str]) -> None:
        """Record runs and stored results in ``db`` from now on (for an executor made without one)."""
        if self._store is not None:
            raise ExecutionError(f"this executor already records its runs in '{self._store.path}'")
        from dagger_nb.dag.store import RunStore

        self._store = RunStore(db, on_takeover=self._taken_over)
        if self._results is not None:
            self._results.close()
            self._results = None

    @property
    def db(self) -> str | None:
        """The file runs and stored results are recorded in, or None."""
        return self._store.path if self._store is not None else None

    def clear_cache(self, workflow: str | None = None, node: str | None = None) -> int:
        """Forget stored node results: all of them, those of ``workflow``, or of one ``node`` of it.
        Returns how many results went; the next incremental run runs those nodes."""
        if node is not None and workflow is None:
            raise ExecutionError(f"clear_cache(node={node!r}) needs the workflow too")
        if workflow is not None and node is not None and workflow in self._workflows:
            self._workflows[workflow].node(node)  # an unknown node is a typo: say which exist
        return self._result_store().clear(workflow, node)

    def invalidate(self, workflow: str, node: str) -> int:
        """Forget the stored results of ``node`` of ``workflow``: the next incremental run runs it
        (and its dependents, if its outputs change)."""
        return self.clear_cache(workflow, node)

    def _result_store(self) -> ResultStore:
        if self._store is not None and self._store.closed:
            # its file may belong to a later executor now: never write it without the lock
            why = getattr(self._store, "_closed_because", "it was closed")
            raise StorageError(f"cannot use the stored results in '{self._store.path}': this DagExecutor is "
                               f"closed: {why}")
        if self._results is None or self._results.closed:
            path = self._store.path if self._store is not None else None
            from dagger_nb.dag.results import ResultStore

            self._results = ResultStore(path, max_cache_mb=self.max_cache_mb)
        return self._results

    def _make_incremental(self, run: Run, choice: bool | None, *, fresh: bool) -> None:
        if choice is None:
            choice = self.incremental if self.incremental is not None else run.config.enable_incremental_cache
        if not (choice or fresh):
            return
        try:
            results = self._result_store()
        except StorageError as error:
            # as when stored results cannot be read (IncrementalRun.load): the run goes on without
            # reuse; if the run store itself cannot write (a full disk, a closed executor), the
            # run fails on that, naming the file
            run.notes.append(f"incremental mode: stored results could not be opened, every node runs and "
                             f"no result is stored: {error}")
            return
        run.incremental = IncrementalRun(results, reuse=not fresh)
