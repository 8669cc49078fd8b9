"""A run's event stream, which builds its two events per node only when somebody looks.

Every attempt of every node emits :class:`NodeStarted` and, mostly, :class:`NodeSucceeded`: two
objects per node, kept for the run's life because a late :meth:`~EventStream.subscribe` receives
every past event first. While nobody listens or subscribes, :class:`RunEvents` logs those two
compactly instead (a few array entries each, their time included) and builds the very same
events, in the same order, the first time its history is asked for (a subscription, a listener,
reading :attr:`history`); from then on it emits objects as any stream does. Other events (a
retry, a failure, a question) are kept as they are, in their place.

Why not a bounded window (``EventStream(limit=...)``): a run's subscribers are promised every
event of the run, and one that subscribes late (a dashboard opened on a finished run) must see
them all; the compact log keeps them all for a fraction of the memory.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from time import time
from typing import Any

from dagger_nb.dag.events import DagEvent, NodeStarted, NodeSucceeded
from dagger_nb.events import EventStream, Subscription

_EVENT, _STARTED, _SUCCEEDED, _SUCCEEDED_RESULT = range(4)


class RunEvents(EventStream[DagEvent]):
    """The event stream of one run (``run_id``); see the module's docstring."""

    def __init__(self, run_id: str) -> None:
        self._built: list[DagEvent] = []
        self._lazy = True
        super().__init__()
        self.run_id = run_id
        # the compact log, in emit order: what each entry is, its node, attempt and time, and
        # its payload (an event kept as it is, the outputs or the single ``result`` value)
        self._kinds = bytearray()
        self._nodes: list[str] = []
        self._attempts = array("l")
        self._times = array("d")
        self._payloads: list[Any] = []

    @property
    def history(self) -> list[DagEvent]:
        """Every event so far, oldest first (built from the compact log on first access)."""
        self._build()
        return self._built

    @history.setter
    def history(self, events: list[DagEvent]) -> None:
        self._built = events

    def started(self, node: str, attempt: int) -> None:
        """Emit :class:`NodeStarted` for ``node``'s attempt ``attempt``."""
        if not self._lazy or self.closed:
            self.emit(NodeStarted(self.run_id, node, attempt))
            return
        self._log(_STARTED, node, attempt, None)

    def succeeded(self, node: str, attempts: int, outputs: dict[str, Any]) -> None:
        """Emit :class:`NodeSucceeded` for ``node`` with ``outputs``."""
        if not self._lazy or self.closed:
            self.emit(NodeSucceeded(self.run_id, node, attempts, outputs))
        elif len(outputs) == 1 and "result" in outputs:  # the usual case: no dict kept for it
            self._log(_SUCCEEDED_RESULT, node, attempts, outputs["result"])
        else:
            self._log(_SUCCEEDED, node, attempts, outputs)

    def emit(self, event: DagEvent) -> None:
        """Append ``event`` (compactly, while nobody listens) and wake subscribers and listeners."""
        if self._lazy and not self.closed:
            self._log(_EVENT, "", 0, event)
        else:
            super().emit(event)

    def emit_many(self, events: list[DagEvent]) -> None:
        """:meth:`emit` each of ``events`` in order."""
        self._build()
        super().emit_many(events)

    def add_listener(self, listener: Callable[[DagEvent], object]) -> None:
        """Call ``listener(event)`` for every future event (events are built from now on)."""
        self._build()
        super().add_listener(listener)

    def subscribe(self) -> Subscription[DagEvent]:
        """Iterate every event, past ones first, then new ones until the run ends."""
        self._build()
        return super().subscribe()

    def _log(self, kind: int, node: str, attempt: int, payload: Any) -> None:
        self._kinds.append(kind)
        self._nodes.append(node)
        self._attempts.append(attempt)
        self._times.append(time())
        self._payloads.append(payload)
        self.emitted += 1

    def _build(self) -> None:
        if not self._lazy:
            return
        self._lazy = False
        run_id, built = self.run_id, self._built
        for kind, node, attempt, stamp, payload in zip(
            self._kinds, self._nodes, self._attempts, self._times, self._payloads, strict=True
        ):
            if kind == _EVENT:
                built.append(payload)
            elif kind == _STARTED:
                built.append(NodeStarted(run_id, node, attempt, stamp))
            elif kind == _SUCCEEDED:
                built.append(NodeSucceeded(run_id, node, attempt, payload, stamp))
            else:
                built.append(NodeSucceeded(run_id, node, attempt, {"result": payload}, stamp))
        self._kinds, self._nodes, self._payloads = bytearray(), [], []
        self._attempts, self._times = array("l"), array("d")
