"""The live dashboard of a DAG run (:class:`RunDashboard`), built from stock ipywidgets.

>>> dashboard = RunDashboard(handle)   # doctest: +SKIP
>>> dashboard                          # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import time
from typing import Any

import ipywidgets as widgets

from dagger_nb.dag import ExecutionReport, RunFinished, RunHandle
from dagger_nb.dag.dot import workflow_dot
from dagger_nb.dag.events import NodeRetrying
from dagger_nb.export import (
    errors_list_html,
    format_seconds,
    legend_html,
    logs_html,
    progress_of,
    run_spans,
    segmented_bar_html,
    timeline_svg,
)
from dagger_nb.notebook.dashboards._base import Dashboard, _shorten, header_html, table_html, usage_cell, usage_text
from dagger_nb.notebook.dashboards.big import COLLAPSE_LIMIT, action_edges, action_progress_html, collapsed_dot
from dagger_nb.notebook.dashboards.inspect import NodeInspector
from dagger_nb.notebook.dashboards.questions import QuestionsPanel

_ORDER = {"failed": 0, "running": 1, "cancelled": 2, "succeeded": 3, "cached": 3, "skipped": 4, "pending": 5}
_NODE_COLUMNS = ("node", "action", "status", "attempts", "duration (s)", "error")
#: Seconds between two timelines of a run above the collapse limit (a timeline of thousands of nodes costs).
_BIG_TIMELINE_EVERY = 1.0
_LEGEND = ("pending", "running", "succeeded", "cached", "failed", "skipped", "cancelled")


class RunDashboard(Dashboard):
    """A live view of one DAG run: header, progress, node table, open questions, status graph, timeline,
    errors with their tracebacks, Cancel.

    Nodes added while the run goes on (``ctx.add_node``, hooks, supervisor
    steps) join the table, the progress bar and the graph at the next redraw.
    Each question the run asks (``ctx.ask_human``) gets a form made from its
    schema in ``questions``; Submit calls ``handle.respond`` and a refused
    answer shows its reason next to the form. The table has a ``worker``
    column when some node ran on a Dask worker. A node waiting for its next
    attempt reads "retrying in 1.6s (attempt 2 of 3)" with the last error.
    Choosing a node in ``inspector`` shows its inputs, outputs, logs and traceback.
    When the run is resumed the dashboard follows it.

    ``interval`` is the shortest time between two redraws (0.25 s: at most 4 a
    second). The node table shows the ``table_rows`` most interesting nodes
    (failed, running, then the latest finished). Above ``collapse_limit`` nodes
    the graph shows one box per action (its nodes counted per status) and a
    per-action progress panel appears.
    """

    def __init__(self, handle: RunHandle, *, collapse_limit: int = COLLAPSE_LIMIT, **options: Any) -> None:
        options.setdefault("timeline", True)
        super().__init__(**options)
        self.handle = handle
        self.collapse_limit = collapse_limit
        #: The open questions, one form each.
        self.questions = QuestionsPanel(handle.respond)
        #: What the nodes printed or logged, folded per node.
        self.logs = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.logs.add_class("dagger-logs")
        children: list[Any] = list(self.children)  # type: ignore[has-type]
        children.insert(children.index(self.table) + 1, self.questions)
        children.insert(children.index(self.errors) + 1, self.logs)
        #: Choose a node to see its inputs, outputs, logs and traceback.
        self.inspector = NodeInspector()
        children.insert(children.index(self.logs) + 1, self.inspector)
        self.children = children
        #: node -> (when the next attempt starts, its number, the last error) while a retry waits
        self.retrying: dict[str, tuple[float, int, str]] = {}
        #: node -> why its next attempt waits (an earlier attempt abandoned after its timeout still runs)
        self.waiting: dict[str, str] = {}
        self._timeline_at = -float("inf")
        self._edges_of: tuple[Any, list[tuple[str, str]]] | None = None
        self.add_class("dagger-run-dashboard")
        handle.add_waited_callback(self.send_final_state)
        handle.follow(self._on_event)  # also after a resume of the run
        if handle.done:
            self.finish()
        else:
            self.refresh()
            self.start_clock()

    def _on_event(self, event: object) -> None:
        # Called for every event of the run: keep it O(1) and cheap (see Dashboard.changed).
        if self.closed:  # a closed dashboard stays a follower of its run; it draws nothing more
            return
        cls = event.__class__
        if cls is RunFinished:
            self.finish()
            return
        if self.finished:  # the run was resumed
            self.retrying.clear()
            self.waiting.clear()
            self.resume()
        if cls is NodeRetrying:
            self.retrying[event.node] = (  # type: ignore[attr-defined]
                event.timestamp + event.delay, event.attempt + 1, event.error  # type: ignore[attr-defined]
            )
        elif cls.__name__ == "NodeWaiting":  # an attempt abandoned after its timeout has not returned yet
            self.waiting[event.node] = event.reason  # type: ignore[attr-defined]
        elif self.retrying or self.waiting:
            node = getattr(event, "node", "")
            self.retrying.pop(node, None)
            self.waiting.pop(node, None)
        self.changed()

    def cancel(self) -> None:
        """Cancel the run."""
        self.handle.cancel()

    async def wait(self) -> ExecutionReport:
        """Wait for the run; its final state is re-sent from the waiting cell. Returns the report."""
        return await self.handle.wait()

    def draw(self, *, final: bool) -> None:
        """Rebuild the panels from the run's current snapshot."""
        report = self.handle.report or self.handle.snapshot()
        outcomes = report.outcomes
        counts = report.counts()
        elapsed = _elapsed(report)
        failed = [o for o in list(outcomes.values()) if o.status == "failed"]
        # A node's failure is told in the error panel: the header names only other causes.
        error = report.error if report.error and not failed else ""
        usage = usage_text(report.tokens, report.cost, report.max_tokens)
        extra = " · ".join(part for part in (usage, error) if part)
        self.header.value = header_html(f"{report.workflow} · run {report.run_id}", report.status, counts,
                                        elapsed, extra=extra)
        running = report.status in ("running", "pending")
        self.progress.value = segmented_bar_html(progress_of(counts, len(outcomes), elapsed=elapsed,
                                                             running=running))
        self.table.value = self._table(report)
        self.errors.value = errors_list_html(
            [(o.node, o.error or "failed", getattr(o, "traceback", None)) for o in failed]
        )
        self.logs.value = logs_html(list(outcomes.values()))
        self.inspector.sync(report)
        self.questions.sync([] if self.handle.done else self.handle.questions())
        collapsed = len(outcomes) > self.collapse_limit
        if collapsed:
            self.graph.update(lambda: collapsed_dot(report.spec, outcomes, edges=self._edges(report.spec)),
                              len(outcomes), final=final, version=self.events_seen)
            self.legend.value = legend_html(_LEGEND) + action_progress_html(outcomes)
        else:
            self.graph.update(lambda: workflow_dot(report.spec, outcomes), len(outcomes), final=final,
                              version=self.events_seen)
            self.legend.value = legend_html(_LEGEND)
        now = time.monotonic()
        if self.timeline is None:
            return
        if final and self.handle.report is report:  # a finished run no longer changes: draw it off the loop
            self.fill_in_thread(self.timeline, lambda: timeline_svg(run_spans(report), now=report.finished_at))
        elif not collapsed or now - self._timeline_at >= _BIG_TIMELINE_EVERY:
            spans = run_spans(report)
            if spans:  # an empty timeline does not hold the next one back
                self._timeline_at = now
            self.timeline.value = timeline_svg(spans, now=time.time() if running else report.finished_at)

    def _table(self, report: ExecutionReport) -> str:
        outcomes = list(report.outcomes.values())
        shown = outcomes[: self.table_rows]
        if len(outcomes) > self.table_rows:
            shown = heapq.nsmallest(self.table_rows, outcomes,
                                    key=lambda o: (_ORDER.get(o.status, 9), -(o.finished_at or o.started_at or 0)))
        now = time.time()
        asking = {} if self.handle.done else {q.node: q.prompt for q in self.handle.questions()}
        rows: list[tuple[object, ...]] = []
        for o in shown:
            status: str = o.status
            error = o.error or ""
            waiting = self.retrying.get(o.node) if o.status == "running" else None
            if o.status == "running" and o.node in asking:
                status, error = "asking", f"waiting for a person to answer: {asking[o.node]}"
            elif o.status == "running" and o.node in self.waiting:
                status, error = "waiting", self.waiting[o.node]
            elif waiting is not None:
                at, attempt, last_error = waiting
                node = next((n for n in report.spec.nodes if n.id == o.node), None)
                of = f" of {node.attempts(report.spec.config)}" if node is not None else ""
                status = "retrying"
                error = f"retrying in {format_seconds(max(at - now, 0.0))} (attempt {attempt}{of}): {last_error}"
            rows.append((o.node, o.action, status, o.attempts,
                         "" if o.duration_s is None else f"{o.duration_s:.3f}", _first_line(error)))
        columns: tuple[str, ...] = _NODE_COLUMNS
        if any(o.worker for o in outcomes):  # where each node ran on Dask (empty for local ones)
            columns += ("worker",)
            rows = [(*row, o.worker or "") for row, o in zip(rows, shown, strict=True)]
        if any(o.tokens or o.cost is not None or o.models for o in outcomes):  # only where a node reported usage
            columns += ("tokens",)
            rows = [(*row, usage_cell(o.tokens, o.cost, o.models)) for row, o in zip(rows, shown, strict=True)]
        return table_html(columns, rows, status_column=2, more=len(outcomes) - len(shown))

    def _edges(self, spec: Any) -> list[tuple[str, str]]:
        # the edges between actions change only when nodes are added (a new spec)
        if self._edges_of is None or self._edges_of[0] is not spec:
            self._edges_of = (spec, action_edges(spec))
        return self._edges_of[1]

    def _widgets(self) -> list[Any]:
        forms = [widget for form in self.questions.forms.values() for widget in (*form.widgets(), form)]
        return [*super()._widgets(), *forms, self.questions, self.logs, *self.inspector.widgets(), self.inspector]


def _first_line(text: str, limit: int = 100) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return _shorten(line, limit)


def _elapsed(report: ExecutionReport) -> float | None:
    if report.started_at is None:
        return None
    # A resumed run keeps its earlier finish time until it ends again.
    end = time.time() if report.status in ("running", "pending") else report.finished_at or time.time()
    return end - report.started_at


__all__ = ["RunDashboard"]
