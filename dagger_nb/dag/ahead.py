"""Sending nodes to a cluster before their dependencies finish.

With a backend that can (:class:`~dagger_nb.backends.SendsAhead`, such as Dask),
a node is submitted as soon as every dependency is *sent*, naming the calls
whose results it takes: the cluster starts it the moment they finish, with no
round trip through the notebook between the two. The executor still runs the
node as before (events, retries, timeouts, outcome): when the node's turn
comes, its worker receives the call already made instead of making one. The
calls made in one scheduling step go to the backend as one batch (for Dask, one
graph update instead of one per call).

What keeps the behaviour the same as the local backend's:

* only a node whose action can be sent (no ``ctx``, not kept inline), that has
  no ``timeout`` (its clock starts when its turn comes) and is not a supervisor
  step goes ahead, and only while the run has room: nodes sent ahead count
  against ``max_parallel_nodes`` until their turn comes;
* a node goes ahead only once per run, for its first attempt; if a dependency
  it waits for was retried (a new call), or its inputs cannot be taken from the
  dependencies' results, it is run anew when its turn comes;
* calls never received (a dependency failed, the run stopped) are cancelled
  when the run ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dagger_nb.dag.dynamic import SUPERVISOR_ACTION
from dagger_nb.errors import DaggerError, NotSentAhead

if TYPE_CHECKING:
    from dagger_nb.backends import SendsAhead
    from dagger_nb.dag.actions import Action, ActionRegistry
    from dagger_nb.dag.report import NodeOutcome
    from dagger_nb.dag.run import Run
    from dagger_nb.dag.spec import NodeSpec

_MISSING: Any = object()


class Ahead:
    """The calls one run sent to ``backend``, and which nodes may go ahead next."""

    def __init__(self, run: Run, backend: SendsAhead, registry: ActionRegistry) -> None:
        self._run = run
        self._backend = backend
        self._registry = registry
        self._sent: dict[str, Any] = {}  # node -> its latest call
        self._early: dict[str, tuple[Any, dict[str, Any]]] = {}  # sent ahead, turn not come: call, calls awaited
        #: how many nodes sent ahead still wait for a dependency (they hold room in the run)
        self.waiting = 0
        self._unsent: dict[str, int] = {}  # node -> its dependencies neither succeeded nor sent
        self._counted: set[str] = set()  # nodes already subtracted from their dependents' _unsent
        self._no_room: deque[str] = deque()  # could have gone ahead when the run had no room
        self._unused: list[Any] = []  # calls made ahead that will not be received
        self._over: set[str] = set()  # nodes whose latest call has returned or failed
        self._batch: Any = None  # the backend's batch the calls being made go in, while one is open

    def call(self, node: NodeSpec, action: Action, kwargs: dict[str, Any], attempt: int) -> Awaitable[Any] | None:
        """The awaitable of this attempt through the backend's calls, or None when it cannot go that way."""
        if not self._backend.can_send(action):
            return None
        outcome = self._run.outcomes[node.id]
        early = self._early.pop(node.id, None)
        if early is not None:
            sent, awaited = early
            if attempt == 1 and all(self._sent.get(dep) is call for dep, call in awaited.items()):
                return self._receive(node.id, sent, action, kwargs, outcome)
            self._unused.append(sent)  # a dependency was retried since: send it anew
        with self.batched():
            sent = self._send_now(node.id, action, kwargs)
            self._count(node.id)
        return self._receive(node.id, sent, action, kwargs, outcome)

    def _send_now(self, node_id: str, action: Action, kwargs: dict[str, Any]) -> Any:
        sent = self._sent[node_id] = self._backend.send(action, kwargs, batch=self._batch)
        self._over.discard(node_id)
        return sent

    async def _receive(
        self, node_id: str, sent: Any, action: Action, kwargs: dict[str, Any], outcome: NodeOutcome
    ) -> Any:
        try:
            try:
                return await self._backend.receive(sent, outcome=outcome)
            except NotSentAhead:  # an input was not in a dependency's result: run it as usual
                sent = self._send_now(node_id, action, kwargs)
                return await self._backend.receive(sent, outcome=outcome)
        finally:
            if self._sent.get(node_id) is sent:
                self._over.add(node_id)

    def succeeded(self, node_id: str) -> None:
        """``node_id`` succeeded (perhaps without being sent: run locally, or before a resume)."""
        self._count(node_id)

    def released(self, node_id: str) -> None:
        """``node_id``'s dependencies are all done: if it went ahead, it no longer holds room."""
        if node_id in self._early:
            self.waiting -= 1
            self._make_room()

    def skipped(self, node_id: str) -> None:
        """``node_id`` will not run (a dependency failed): its call, if made ahead, is not needed."""
        early = self._early.pop(node_id, None)
        if early is not None:
            self._unused.append(early[0])
            self.waiting -= 1
            self._make_room()

    async def close(self) -> None:
        """Cancel every call that was never received, and let go of them all."""
        unused = [*self._unused, *(sent for sent, _ in self._early.values())]
        self._unused.clear()
        self._early.clear()
        self._sent.clear()
        self._no_room.clear()
        await self._backend.discard(unused)

    @contextmanager
    def batched(self) -> Iterator[None]:
        """The calls made inside (by this object's methods) reach the cluster together, when the
        outermost block ends: the executor wraps each scheduling step that may send in one (a
        call outside a block is submitted at once).

        A block must never await, so that none of its calls is received or cancelled before it is
        submitted.
        """
        if self._batch is not None:
            yield
            return
        with self._backend.batch() as batch:
            self._batch = batch
            try:
                yield
            finally:
                self._batch = None

    # -- deciding what goes ahead -----------------------------------------------------------------

    def _count(self, node_id: str) -> None:
        """``node_id`` was sent or succeeded: its dependents may now go ahead (and theirs, and so on)."""
        run = self._run
        counted = [node_id]
        while counted:
            current = counted.pop()
            if current in self._counted:
                continue
            self._counted.add(current)
            for dependent in run.dependents[current]:
                left = self._unsent.get(dependent)
                if left is None:
                    left = sum(
                        dep not in self._counted and run.outcomes[dep].status != "succeeded"
                        for dep in run.dependencies[dependent]
                    )
                else:
                    left -= 1
                self._unsent[dependent] = left
                if left == 0 and self._send_early(dependent):
                    counted.append(dependent)

    def _make_room(self) -> None:
        while self._no_room and self._run.workers + self.waiting < self._run.limit:
            node_id = self._no_room.popleft()
            if self._send_early(node_id):
                self._count(node_id)

    def _send_early(self, node_id: str) -> bool:
        """Send ``node_id`` ahead if it can go; True if it was sent."""
        run = self._run
        if (
            run.stopping
            or run.waiting[node_id] == 0  # its turn has come: it runs the usual way
            or run.outcomes[node_id].status != "pending"
            or node_id in self._sent
        ):
            return False
        node = run.nodes[node_id]
        if node.timeout is not None or node.action == SUPERVISOR_ACTION:
            return False
        try:
            action = self._registry.get(node.action)
        except DaggerError:
            return False
        if not self._backend.can_send(action):
            return False
        if run.workers + self.waiting >= run.limit:
            self._no_room.append(node_id)
            return False
        arguments = self._arguments(node_id)
        if arguments is None:
            return False
        kwargs, picks = arguments
        kwargs = action.accepted(kwargs)
        picks = tuple(pick for pick in picks if action.accepts(pick[0]))
        awaited = {
            dep: self._sent[dep] for dep in run.dependencies[node_id] if run.outcomes[dep].status != "succeeded"
        }
        if not self._over.isdisjoint(awaited):
            return False  # a dependency's call failed and it waits for its retry: no call to wait for
        sent = self._backend.send(action, kwargs, after=awaited, picks=picks, batch=self._batch)
        self._sent[node_id] = sent
        self._early[node_id] = (sent, awaited)
        self.waiting += 1
        return True

    def _arguments(self, node_id: str) -> tuple[dict[str, Any], tuple[Any, ...]] | None:
        """The node's inputs known now, and those to pick from dependencies' results; None if neither."""
        run = self._run
        kwargs: dict[str, Any] = {}
        picks = []
        for name, namespace, key, literal, _ in run.plan.inputs[node_id]:
            if namespace is None:
                kwargs[name] = literal
            elif run.outcomes.get(namespace) is not None and run.outcomes[namespace].status != "succeeded":
                declared = tuple(output.name for output in run.nodes[namespace].outputs)
                picks.append((name, namespace, declared, key))
            else:
                value = run.cache.peek(namespace, key, _MISSING)  # a result kept on the cluster stays there
                if value is _MISSING:
                    return None  # the usual way reports what is missing
                kwargs[name] = value
        return kwargs, tuple(picks)
