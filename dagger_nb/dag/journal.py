"""Commit each finished node of a run as it finishes, nodes finishing together in one transaction.

A worker that finishes a node awaits :meth:`NodeJournal.commit` before the node's
dependents are released, so after a crash the store knows every node whose
effects anyone could have seen: a resume re-runs at most the nodes that were in
flight (running, or waiting for their commit) when the process died.

Group commit: the first worker to arrive writes (in a thread, off the event
loop) every node queued so far; workers arriving while it writes queue for the
next transaction, which the same writer starts as soon as the first ends.

Snapshots (``config.cache_snapshot_interval``) go through the same writer: what
running nodes wrote through ``ctx`` so far is stored between node commits, so a
snapshot never overwrites a node's committed values with older ones.

Nodes an action adds (``ctx.add_node``, a supervisor step's tools) are part of that
action's work: they, their outcomes and their values are stored in the transaction
that commits the node that added them (or later, never earlier). A step killed
mid-way therefore leaves no trace of its additions, and a resume re-runs it from a
clean slate, while every node added by a committed step keeps its committed outcome.
A node added by a hook is stored at once, unless it depends on such a held node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb.errors import StorageError

if TYPE_CHECKING:
    from dagger_nb.dag.run import Run
    from dagger_nb.dag.spec import WorkflowSpec
    from dagger_nb.dag.store import NodeRecord, RunStore


class NodeJournal:
    """The committed state of one run's finished nodes; used only on the run's loop."""

    def __init__(self, store: RunStore, run: Run) -> None:
        self._store = store
        self._run = run
        self._queue: list[tuple[str, dict[str, Any] | None, bool]] = []
        self._snapshots: set[str] = set()
        self._batch_done = anyio.Event()
        self._writing = False
        #: nodes whose spec is stored (or goes with the next write), and how many of the run's
        #: nodes were looked at; the others wait for their adder's commit (Run.added_by)
        self._durable: set[str] = {node.id for node in run.spec.nodes}
        self._seen = len(run.spec.nodes)
        self._pending: dict[str, None] = {}
        self._held: dict[str, tuple[str, dict[str, Any] | None, bool]] = {}
        self._finished: set[str] = set()
        self._spec_changed = False
        #: namespaces whose values are committed (the end of the run need not write them again)
        self.committed: set[str] = set()
        #: the first failure to write: every later commit raises it too
        self.failure: StorageError | None = None

    async def commit(
        self, node_id: str, outputs: dict[str, Any] | None, *, whole_namespace: bool = False
    ) -> None:
        """Commit ``node_id``'s outcome and ``outputs`` (None: keep the stored values); returns
        once they are in the file.

        ``whole_namespace``: the action could write to the cache itself (it took ``ctx``), so its
        whole namespace is stored rather than only what it returned. Raises :class:`StorageError`.
        Not cancellable: a finished node is recorded or the write has failed.
        """
        if self.failure is not None:
            raise self.failure
        self._queue.append((node_id, outputs, whole_namespace))
        with anyio.CancelScope(shield=True):
            if self._writing:
                done = self._batch_done
                await done.wait()
            else:
                await self._write_all()
        if self.failure is not None:
            raise self.failure

    async def snapshot(self, namespaces: list[str]) -> None:
        """Store the values now in ``namespaces`` (of nodes still running) with the next write.

        Not cancellable once writing; raises :class:`StorageError` like :meth:`commit`.
        """
        if self.failure is not None:
            raise self.failure
        self._snapshots.update(namespaces)
        if not self._writing:
            with anyio.CancelScope(shield=True):
                await self._write_all()
        if self.failure is not None:
            raise self.failure

    async def _write_all(self) -> None:
        self._writing = True
        try:
            while self._queue or self._snapshots:
                queued, self._queue = self._queue, []
                snapshots, self._snapshots = self._snapshots, set()
                done, self._batch_done = self._batch_done, anyio.Event()
                try:
                    if self.failure is None:
                        queued = self._durable_items(queued)
                        records = [self._record(*item) for item in queued]
                        spec = self._durable_spec() if self._spec_changed else None
                        added_by = ({node: adder for node, adder in self._run.added_by.items()
                                     if node in self._durable} if spec is not None else None)
                        snapshots &= self._durable
                        snapshots -= {node for node, _, _ in queued}  # committed whole in this batch
                        await anyio.to_thread.run_sync(self._commit, records, spec, snapshots, added_by)
                        if spec is not None:
                            self._spec_changed = False
                        self.committed.update(node for node, outputs, whole in queued if outputs is not None or whole)
                except BaseException as error:
                    # Whatever went wrong, the waiting workers must not believe their nodes stored.
                    self.failure = error if isinstance(error, StorageError) else StorageError(
                        f"cannot record nodes of run '{self._run.run_id}' in '{self._store.path}': "
                        f"{type(error).__name__}: {error}"
                    )
                    if not isinstance(error, Exception):
                        raise
                finally:
                    done.set()
        finally:
            self._writing = False

    def _durable_items(
        self, queued: list[tuple[str, dict[str, Any] | None, bool]]
    ) -> list[tuple[str, dict[str, Any] | None, bool]]:
        """The queued commits that can be written now, with held ones their adder's commit frees.

        A node added while the run ran is stored once the node that added it has been committed
        (in this batch or before) and all its dependencies are stored: until then its own commit
        is held, so a crash before its adder finishes forgets both.
        """
        run = self._run
        nodes = run.spec.nodes
        for node in nodes[self._seen:]:
            self._pending[node.id] = None
        self._seen = len(nodes)
        ready = []
        for item in queued:
            if item[0] in self._durable:
                ready.append(item)
            else:
                self._held[item[0]] = item
        self._finished.update(node for node, _, _ in ready)
        changed = bool(self._pending)
        while changed:
            changed = False
            for node_id in list(self._pending):
                adder = run.added_by.get(node_id)
                if (adder is None or (adder in self._durable and adder in self._finished)) and all(
                    dependency in self._durable for dependency in run.dependencies[node_id]
                ):
                    del self._pending[node_id]
                    self._durable.add(node_id)
                    self._spec_changed = changed = True
                    held = self._held.pop(node_id, None)
                    if held is not None:
                        ready.append(held)
                        self._finished.add(node_id)
        return ready

    def _durable_spec(self) -> WorkflowSpec:
        spec = self._run.spec
        if len(self._durable) == len(spec.nodes):
            return spec
        return spec.model_copy(update={"nodes": [node for node in spec.nodes if node.id in self._durable]})

    def _commit(
        self, records: list[tuple[NodeRecord, bool]], spec: WorkflowSpec | None, snapshots: set[str] | None = None,
        added_by: dict[str, str] | None = None,
    ) -> None:
        # In the worker thread: copying a namespace scans the whole cache (it is thread-safe).
        cache = self._run.cache
        if snapshots:
            self._store.save_values(self._run.run_id, {node: cache.namespace(node) for node in sorted(snapshots)})
        if records or spec is not None:
            rows = [(outcome, position, cache.namespace(outcome.node) if whole else values)
                    for (outcome, position, values), whole in records]
            self._store.commit_nodes(self._run.run_id, rows, spec=spec, added_by=added_by)

    def _record(
        self, node_id: str, outputs: dict[str, Any] | None, whole_namespace: bool
    ) -> tuple[NodeRecord, bool]:
        run = self._run
        return (run.outcomes[node_id], run.position(node_id), outputs), whole_namespace
