"""Terminal output for DAG runs: a live progress line, the outcome table, JSON."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from dagger_nb.dag.events import DagEvent, NodeCached, NodeFailed, NodeStarted, NodeSucceeded, RunFinished
from dagger_nb.dag.report import ExecutionReport
from dagger_nb.dag.spec import WorkflowSpec


class ProgressLine:
    """Redraws one status line at most ``rate`` times a second, whatever the event rate.

    On a terminal the line is rewritten in place; elsewhere (CI logs, pipes) it
    prints a line when a node fails and a final summary, so logs stay short.
    """

    def __init__(self, spec: WorkflowSpec, *, stream: TextIO = sys.stderr, rate: float = 10.0) -> None:
        self.spec = spec
        self.stream = stream
        self.interval = 1.0 / rate
        self.total = len(spec.nodes)
        self.done = self.failed = self.cached = 0
        self.running: dict[str, None] = {}
        self._last_draw = 0.0
        self._tty = stream.isatty()
        self._started = time.monotonic()

    def on_event(self, event: DagEvent) -> None:
        """Feed one run event."""
        if isinstance(event, NodeStarted):
            self.running[event.node] = None
        elif isinstance(event, NodeSucceeded):
            self.running.pop(event.node, None)
            self.done += 1
        elif isinstance(event, NodeCached):  # reused by an incremental run: done without running
            self.done += 1
            self.cached += 1
        elif isinstance(event, NodeFailed):
            self.running.pop(event.node, None)
            self.failed += 1
            if not self._tty:
                print(f"  node '{event.node}' failed: {event.error}", file=self.stream)
        elif isinstance(event, RunFinished):
            self._draw(final=True)
            return
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(final=False)

    def text(self) -> str:
        """The current status line."""
        running = ", ".join(list(self.running)[:3]) + (" …" if len(self.running) > 3 else "")
        elapsed = time.monotonic() - self._started
        cached = f" ({self.cached} cached)" if self.cached else ""
        return (f"[{self.spec.name}] {self.done + self.failed}/{self.total} done{cached}, {self.failed} failed, "
                f"{elapsed:.1f}s" + (f" | running: {running}" if running else ""))

    def _draw(self, *, final: bool) -> None:
        if self._tty:
            self.stream.write("\r\x1b[2K" + self.text() + ("\n" if final else ""))
            self.stream.flush()
        elif final:
            print(self.text(), file=self.stream)


def report_table(report: ExecutionReport) -> str:
    """The outcome table as text: node, action, status, attempts, seconds, error."""
    import pandas as pd

    frame = report.to_frame()[["node", "action", "status", "attempts", "duration_s", "error"]]
    frame["duration_s"] = frame["duration_s"].map(lambda s: "" if pd.isna(s) else f"{s:.3f}")
    frame["error"] = frame["error"].fillna("")
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        return frame.to_string(index=False)


def report_json(report: ExecutionReport) -> str:
    """The report as JSON: run, status, error and each node's outcome."""
    outcomes: list[dict[str, Any]] = [
        {"node": o.node, "action": o.action, "status": o.status, "attempts": o.attempts,
         "retry_messages": o.retry_messages, "error": o.error, "started_at": o.started_at,
         "finished_at": o.finished_at, "duration_s": o.duration_s, "notes": o.notes,
         "reason": o.reason, "cached_from": o.cached_from}
        for o in report.outcomes.values()
    ]
    return json.dumps({"run_id": report.run_id, "workflow": report.workflow, "status": report.status,
                       "success": report.success, "error": report.error, "outcomes": outcomes}, indent=2)
