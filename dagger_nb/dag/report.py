"""What a run produced: one :class:`NodeOutcome` per node, gathered in an :class:`ExecutionReport`."""

from __future__ import annotations

import os
import warnings
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from dagger_nb.cache import Cache
from dagger_nb.dag.dot import workflow_dot
from dagger_nb.dag.spec import SharedEmptyList, WorkflowSpec
from dagger_nb.graph import STATUS_COLOURS

if TYPE_CHECKING:
    import pandas as pd

#: ``cached``: an incremental run reused the node's stored result instead of running it
NodeStatus = Literal["pending", "running", "succeeded", "cached", "failed", "skipped", "cancelled"]
#: the statuses of a node whose outputs its dependents can read
DONE_STATUSES = frozenset({"succeeded", "cached"})


class RunStatus(StrEnum):
    """Where a DAG run stands; each member equals its string (``status == "succeeded"``)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    #: the store says running, but the process that ran it is gone (resume it)
    INTERRUPTED = "interrupted"


FRAME_COLUMNS = [
    "node", "action", "status", "attempts", "started_at", "finished_at", "duration_s", "error", "worker",
    "cached_from", "reason", "tokens", "cost", "models",
]


class _NoTexts(SharedEmptyList):
    """The one empty ``notes``/``logs``/``retry_messages`` list outcomes share until they have some."""

    hint = "this empty list is shared by every node outcome: use NodeOutcome.add_note(), or assign a new list"

    def __reduce__(self) -> str:
        return "NO_TEXTS"


#: the shared empty list (see :class:`_NoTexts`)
NO_TEXTS: list[str] = _NoTexts()


@dataclass(slots=True)
class NodeOutcome:
    """How one node fared. Times are seconds since the epoch (None until they happen).

    A run keeps its nodes' times in one array of floats (see :func:`share_clock`) rather than
    two float objects per node: those, allocated one by one while the run's short-lived objects
    come and go, would pin the memory the run used long after it ended.
    """

    #: the run's array of times this outcome's ``started_at``/``finished_at`` live in (None: its own)
    _clock: array[float] | None = field(default=None, init=False, repr=False, compare=False)
    node: str
    action: str
    status: NodeStatus = "pending"
    attempts: int = 0
    retry_messages: list[str] = field(default_factory=lambda: NO_TEXTS)
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    notes: list[str] = field(default_factory=lambda: NO_TEXTS)
    #: where the last attempt ran, when the backend knows (a Dask worker's address)
    worker: str | None = None
    #: the last failed attempt's traceback, trimmed to the user's frames
    traceback: str | None = None
    #: what the action printed or logged, one line each (bounded: see ``dagger_nb._capture``)
    logs: list[str] = field(default_factory=lambda: NO_TEXTS)
    #: in an incremental run: why the node ran ("code changed", "input 'x' changed", ...) or was reused
    reason: str | None = None
    #: the run whose stored result a ``cached`` node reused
    cached_from: str | None = None
    #: tokens its action reported (``ctx.record_usage``), every attempt counted
    tokens: int = 0
    #: the cost its action reported, when it reported any
    cost: float | None = None
    #: the models its action named, in the order first named
    models: tuple[str, ...] = ()

    def add_note(self, text: str) -> None:
        """Append ``text`` to :attr:`notes` (which start as one shared, read-only empty list)."""
        if type(self.notes) is _NoTexts:
            self.notes = [text]
        else:
            self.notes.append(text)

    @property
    def duration_s(self) -> float | None:
        """Seconds from the first attempt's start to the end, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def __getstate__(self) -> tuple[Any, ...]:
        # a copy (pickle, copy.copy) has its own times, not the run's array
        return tuple(getattr(self, name) for name in _STATE_FIELDS)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._clock = None
        for name, value in zip(_STATE_FIELDS, state, strict=True):
            setattr(self, name, value)


_STATE_FIELDS = tuple(name for name in NodeOutcome.__dataclass_fields__ if name != "_clock")
_NONE = float("nan")  # a time not yet known, in a clock


_STARTED_SLOT = NodeOutcome.__dict__["started_at"]  # holds the index into the clock when there is one


def _timing(slot: Any, offset: int) -> property:
    """``started_at`` (offset 0) or ``finished_at`` (1): the outcome's own value, or its entry in
    its run's clock (whose index its ``started_at`` slot then holds)."""

    def get(self: NodeOutcome) -> float | None:
        clock = self._clock
        if clock is None:
            own: float | None = slot.__get__(self)
            return own
        value = clock[2 * _STARTED_SLOT.__get__(self) + offset]
        return None if value != value else value  # NaN: not known yet

    def set_(self: NodeOutcome, value: float | None) -> None:
        clock = self._clock
        if clock is None:
            slot.__set__(self, value)
        else:
            clock[2 * _STARTED_SLOT.__get__(self) + offset] = _NONE if value is None else value

    return property(get, set_)


for _name, _offset in (("started_at", 0), ("finished_at", 1)):
    setattr(NodeOutcome, _name, _timing(NodeOutcome.__dict__[_name], _offset))


def share_clock(outcomes: Iterable[NodeOutcome], clock: array[float]) -> None:
    """Keep the times of ``outcomes`` (not on a clock yet) in ``clock``, two entries each, appended."""
    for outcome in outcomes:
        if outcome._clock is not None:
            continue
        started, finished = outcome.started_at, outcome.finished_at
        _STARTED_SLOT.__set__(outcome, len(clock) // 2)
        clock.append(_NONE if started is None else started)
        clock.append(_NONE if finished is None else finished)
        outcome._clock = clock


def clock_in_order(outcomes: Iterable[NodeOutcome]) -> array[float] | None:
    """The one clock that holds the times of ``outcomes`` in their order (entries ``2i`` and
    ``2i + 1`` for the ``i``-th), as a run's outcomes made together share it; None otherwise."""
    clock: array[float] | None = None
    index = _STARTED_SLOT.__get__
    for position, outcome in enumerate(outcomes):
        if clock is None:
            clock = outcome._clock
        if clock is None or outcome._clock is not clock or index(outcome) != position:
            return None
    return clock


def pending_outcomes(nodes: Iterable[tuple[str, str]], clock: array[float]) -> dict[str, NodeOutcome]:
    """New outcomes for ``(node, action)`` pairs, their times in ``clock`` (appended): equal to
    ``NodeOutcome(node, action)`` on :func:`share_clock`, made without the dataclass's ``__init__``
    (a new run makes one per node)."""
    make, set_index = object.__new__, _STARTED_SLOT.__set__
    outcomes: dict[str, NodeOutcome] = {}
    index = len(clock) // 2
    for node, action in nodes:
        outcome = make(NodeOutcome)
        outcome._clock = clock
        outcome.node, outcome.action, outcome.status, outcome.attempts = node, action, "pending", 0
        outcome.retry_messages = outcome.notes = outcome.logs = NO_TEXTS
        outcome.error = outcome.worker = outcome.traceback = outcome.reason = outcome.cached_from = None
        outcome.tokens, outcome.cost, outcome.models = 0, None, ()
        set_index(outcome, index)
        index += 1
        outcomes[node] = outcome
    clock.extend(array("d", [_NONE]) * (2 * index - len(clock)))
    return outcomes


@dataclass(slots=True, weakref_slot=True)  # a finished run refers to its report weakly (Run.release_values)
class ExecutionReport:
    """The result of a run: status, error and each node's :class:`NodeOutcome`.

    In a notebook it shows itself as a coloured table.
    """

    run_id: str
    workflow: str
    status: RunStatus
    #: node id -> how it fared, in the workflow's order (a succeeded run's record, once its
    #: executor let the full report go, is a read-only :class:`~dagger_nb.dag.record.CompactOutcomes`)
    outcomes: Mapping[str, NodeOutcome]
    spec: WorkflowSpec
    cache: Cache
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: problems around the run that are not a node's (a hook that raised, ...)
    notes: list[str] = field(default_factory=list)
    #: tokens every node reported (``ctx.record_usage``), the run's total against ``max_tokens``
    tokens: int = 0
    #: the cost every node reported, when one reported any
    cost: float | None = None
    #: the run's token budget (``config.max_tokens``, or ``DagExecutor(max_tokens=...)``); None: no budget
    max_tokens: int | None = None

    @property
    def success(self) -> bool:
        """True when every node succeeded."""
        return self.status == "succeeded"

    def counts(self) -> dict[str, int]:
        """Number of nodes in each status."""
        counted = getattr(self.outcomes, "counts", None)  # a compact record counts without making outcomes
        if counted is not None:
            return counted()
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    def to_frame(self) -> pd.DataFrame:
        """One row per node: ``node, action, status, attempts, started_at, finished_at, duration_s, error,
        worker`` (where the last attempt ran: a Dask worker's address, None in this process), ``cached_from``
        (the run a ``cached`` node's result came from), ``reason`` (in an incremental run, why the node
        ran or was reused), and the usage its action reported: ``tokens``, ``cost``, ``models`` (comma-separated)."""
        rows = [
            (o.node, o.action, o.status, o.attempts, o.started_at, o.finished_at, o.duration_s, o.error, o.worker,
             o.cached_from, o.reason, o.tokens, o.cost, ", ".join(o.models))
            for o in self.outcomes.values()
        ]
        import pandas as pd

        frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
        for column in ("started_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def to_dot(self) -> str:
        """DOT of the workflow with each node coloured by its status."""
        return workflow_dot(self.spec, self.outcomes)

    def timeline_frame(self) -> pd.DataFrame:
        """One row per node that started: ``node, action, status, lane, start, finish, duration_s``
        (``lane``: the worker slot it ran in, as in the dashboard's timeline)."""
        from dagger_nb.export import timeline_frame

        return timeline_frame(self)

    def timeline(self) -> pd.DataFrame:
        """Deprecated: use :meth:`timeline_frame`."""
        warnings.warn("ExecutionReport.timeline() is deprecated; use timeline_frame()", DeprecationWarning,
                      stacklevel=2)
        return self.timeline_frame()

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """A self-contained HTML page of the run (table, graph, timeline, tracebacks, logs); written to
        ``path`` when given. Returns the page."""
        from dagger_nb.export import report_to_html

        return report_to_html(self, path)

    def to_json(self) -> str:
        """The run and each node's outcome (with traceback and logs) as JSON text."""
        from dagger_nb.export import report_to_json

        return report_to_json(self)

    def __repr__(self) -> str:
        counts = ", ".join(f"{count} {status}" for status, count in sorted(self.counts().items()))
        return f"<ExecutionReport {self.workflow!r} run {self.run_id}: {self.status} ({counts}){usage_summary(self)}>"

    def _repr_html_(self) -> str:
        return report_html(self)


def usage_summary(report: ExecutionReport) -> str:
    """``", 1,200 tokens of 5,000, cost 0.03"`` when the run's nodes reported usage or it has a budget; else ``""``."""
    budget = report.max_tokens
    if not report.tokens and report.cost is None and budget is None:
        return ""
    text = f", {report.tokens:,} tokens" + (f" of {budget:,}" if budget is not None else "")
    return text + (f", cost {report.cost:g}" if report.cost is not None else "")


def report_html(report: ExecutionReport, *, limit: int = 200) -> str:
    """An escaped HTML summary and node table of ``report`` (at most ``limit`` rows)."""
    import html  # only a notebook shows a report as HTML

    e = html.escape
    header = (
        f"<b>{e(report.workflow)}</b> run <code>{e(report.run_id)}</code>: "
        f"<span style='background:{STATUS_COLOURS.get(report.status, '#fff')};padding:0 4px'>"
        f"{e(report.status)}</span>"
    )
    header += e(usage_summary(report))
    if report.error:
        header += f"<br><span style='color:#b3261e'>{e(report.error)}</span>"
    shown = list(report.outcomes.values())[:limit]
    on_workers = any(outcome.worker for outcome in shown)  # a column only when a backend said where
    rows = []
    for outcome in shown:
        colour = STATUS_COLOURS.get(outcome.status, "#fff")
        duration = "" if outcome.duration_s is None else f"{outcome.duration_s:.3f}"
        worker = f"<td>{e(outcome.worker or '')}</td>" if on_workers else ""
        rows.append(
            f"<tr><td>{e(outcome.node)}</td><td>{e(outcome.action)}</td>"
            f"<td style='background:{colour}'>{e(outcome.status)}</td><td>{outcome.attempts}</td>"
            f"<td>{duration}</td><td>{e(outcome.error or '')}</td>{worker}</tr>"
        )
    more = len(report.outcomes) - limit
    footer = f"<p>… and {more} more nodes</p>" if more > 0 else ""
    return (
        f"<div class='dagger-report'><p>{header}</p><table><thead><tr><th>node</th><th>action</th>"
        f"<th>status</th><th>attempts</th><th>duration (s)</th><th>error</th>"
        f"{'<th>worker</th>' if on_workers else ''}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{footer}</div>"
    )
