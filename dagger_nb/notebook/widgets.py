"""Live dashboards for DAG runs, task jobs and pub/sub, built from stock ipywidgets.

>>> dashboard = RunDashboard(handle)   # doctest: +SKIP
>>> dashboard                          # doctest: +SKIP

Each one updates from its source's events at most 4 times a second (however
fast events arrive), always shows the final state when the work ends, and
escapes every piece of text it shows.
"""

from __future__ import annotations

import time
from typing import Any

from dagger_nb.dag import ExecutionReport, RunFinished, RunHandle
from dagger_nb.dag.dot import workflow_dot
from dagger_nb.notebook._dashboard import Dashboard, errors_html, header_html, table_html
from dagger_nb.notebook._questions import QuestionsPanel
from dagger_nb.notebook.agent_widgets import JobDashboard, PubSubMonitor

_ORDER = {"failed": 0, "running": 1, "cancelled": 2, "succeeded": 3, "skipped": 4, "pending": 5}
_NODE_COLUMNS = ("node", "action", "status", "attempts", "duration (s)", "error")
_DONE = ("succeeded", "failed", "skipped", "cancelled")


class RunDashboard(Dashboard):
    """A live view of one DAG run: header, progress, node table, open questions, status graph, errors, Cancel.

    Nodes added while the run goes on (``ctx.add_node``, hooks, supervisor
    steps) join the table, the progress bar and the graph at the next redraw.
    Each question the run asks (``ctx.ask_human``) gets a form made from its
    schema in ``questions``; Submit calls ``handle.respond`` and a refused
    answer shows its reason next to the form. The table has a ``worker``
    column when some node ran on a Dask worker.

    ``interval`` is the shortest time between two redraws (0.25 s: at most 4 a
    second). The node table shows the ``table_rows`` most interesting nodes
    (failed, running, then the latest finished). The graph is re-drawn live up
    to ``graph_live_limit`` nodes (at most every ``graph_interval`` seconds),
    above that only when the run ends.
    """

    def __init__(self, handle: RunHandle, **options: Any) -> None:
        super().__init__(**options)
        self.handle = handle
        #: The open questions, one form each.
        self.questions = QuestionsPanel(handle.respond)
        children: list[Any] = list(self.children)  # type: ignore[has-type]
        children.insert(children.index(self.table) + 1, self.questions)
        self.children = children
        self.progress.max = max(len(handle.spec.nodes), 1)
        self.add_class("dagger-run-dashboard")
        handle.add_waited_callback(self.send_final_state)
        if handle.done:
            self.finish()
        else:
            handle.add_listener(self._on_event)
            self.refresh()

    def _on_event(self, event: object) -> None:
        # Called for every event of the run: keep it O(1) and cheap (see Dashboard.changed).
        if event.__class__ is RunFinished:
            self.finish()
            return
        self.events_seen += 1
        throttle = self._throttle
        if throttle.pending:
            throttle.dirty = True
        else:
            throttle.poke()

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
        finished = sum(counts.get(status, 0) for status in _DONE)
        self.header.value = header_html(
            f"{report.workflow} · run {report.run_id}", report.status, counts, _elapsed(report),
            extra=report.error or "",
        )
        self.progress.max = max(len(outcomes), 1)
        self.progress.value = finished
        self.progress.bar_style = _bar_style(report.status, counts)
        self.table.value = self._table(report)
        failed = [(o.node, o.error or "failed") for o in outcomes.values() if o.status == "failed"]
        self.errors.value = errors_html(failed)
        self.questions.sync([] if self.handle.done else self.handle.questions())
        self.graph.update(lambda: workflow_dot(report.spec, outcomes), len(outcomes), final=final)

    def _table(self, report: ExecutionReport) -> str:
        outcomes = list(report.outcomes.values())
        if len(outcomes) > self.table_rows:
            outcomes.sort(key=lambda o: (_ORDER.get(o.status, 9), -(o.finished_at or o.started_at or 0)))
        shown = outcomes[: self.table_rows]
        rows: list[tuple[object, ...]] = [
            (o.node, o.action, o.status, o.attempts,
             "" if o.duration_s is None else f"{o.duration_s:.3f}", o.error or "")
            for o in shown
        ]
        columns: tuple[str, ...] = _NODE_COLUMNS
        if any(o.worker for o in outcomes):  # where each node ran on Dask (empty for local ones)
            columns += ("worker",)
            rows = [(*row, o.worker or "") for row, o in zip(rows, shown, strict=True)]
        return table_html(columns, rows, status_column=2, more=len(outcomes) - len(shown))

    def _widgets(self) -> list[Any]:
        forms = [widget for form in self.questions.forms.values() for widget in (*form.widgets(), form)]
        return [*super()._widgets(), *forms, self.questions]


def _elapsed(report: ExecutionReport) -> float | None:
    if report.started_at is None:
        return None
    return (report.finished_at or time.time()) - report.started_at


def _bar_style(status: str, counts: dict[str, int]) -> str:
    if status == "succeeded":
        return "success"
    if counts.get("failed") or status == "failed":
        return "danger"
    if status in ("cancelled", "paused"):
        return "warning"
    return "info"


__all__ = ["JobDashboard", "PubSubMonitor", "RunDashboard"]
