"""HTML pieces shared by the live dashboards and exported reports, and the export itself.

Everything here is plain text in, escaped HTML or SVG out (no IPython, no
ipywidgets, no pandas at import time): the notebook dashboards draw their
progress bar, timeline and error panel with these functions, and
:func:`report_to_html` / :func:`report_to_json` write a finished run as a
self-contained page or a JSON document. The timeline (lanes, SVG, frame) lives in
:mod:`dagger_nb._timeline` and is re-exported here.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagger_nb._timeline import Span, assign_lanes, format_seconds, lane_layout, run_spans, timeline_frame, timeline_svg
from dagger_nb._traceback import printable
from dagger_nb.graph import STATUS_COLOURS

if TYPE_CHECKING:
    from dagger_nb.dag.report import ExecutionReport

__all__ = [
    "SEGMENTS", "TASK_SEGMENT", "Progress", "Span", "assign_lanes", "errors_list_html", "escape", "format_seconds",
    "job_report_to_html", "job_report_to_json", "lane_layout", "legend_html", "logs_html", "one_line",
    "progress_of", "report_to_html", "report_to_json", "run_spans", "segmented_bar_html", "short_id",
    "task_logs_html", "task_traceback", "timeline_frame", "timeline_svg", "traceback_details",
]

escape = html.escape

#: The order of a progress bar's segments; each status in its graph colour.
SEGMENTS = ("succeeded", "cached", "failed", "skipped", "cancelled", "running")
#: Task statuses counted as one of :data:`SEGMENTS`.
TASK_SEGMENT = {"completed": "succeeded", "accepted": "succeeded", "failed": "failed", "rejected": "failed",
                "cancelled": "cancelled", "in_progress": "running", "blocked": "skipped"}
_DONE = ("succeeded", "cached", "failed", "skipped", "cancelled")


def short_id(text: str, length: int = 8) -> str:
    """A long id cut to ``length`` characters (after a word prefix such as ``task-``), enough to tell
    ids apart in a table: ``3f2a9c1b…``, ``task-5af02c1e…``."""
    prefix, dash, rest = text.partition("-")
    if not (dash and prefix.isalpha()):
        prefix, dash, rest = "", "", text
    return text if len(rest) <= length + 1 else f"{prefix}{dash}{rest[:length]}…"


def one_line(value: Any, limit: int = 120) -> str:
    """``value`` as one line of compact JSON (text as it is), cut to ``limit`` characters."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(_squash(value), ensure_ascii=False, default=str, separators=(", ", ": "))
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _squash(value: Any, depth: int = 0) -> Any:
    """``value`` with the line breaks inside its texts turned into spaces (for one line of JSON)."""
    if isinstance(value, str):
        return " ".join(value.split())
    if depth > 20:
        return value
    if isinstance(value, Mapping):
        return {str(key): _squash(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_squash(item, depth + 1) for item in value]
    return value


@dataclass(slots=True)
class Progress:
    """How far some work is: counts per segment, total, elapsed seconds, whether it still runs."""

    counts: dict[str, int]
    total: int
    elapsed: float | None
    running: bool

    @property
    def done(self) -> int:
        """Items that ended, in any way."""
        return sum(self.counts.get(status, 0) for status in _DONE)

    @property
    def rate(self) -> float | None:
        """Items ended per second so far (None before the first one)."""
        if not self.elapsed or not self.done:
            return None
        return self.done / self.elapsed

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None when unknown or finished)."""
        rate = self.rate
        if not self.running or rate is None or self.total <= self.done:
            return None
        return (self.total - self.done) / rate


def progress_of(statuses: Mapping[str, int], total: int, *, elapsed: float | None, running: bool) -> Progress:
    """A :class:`Progress` from counts per node or task status (task statuses are mapped to segments)."""
    counts: dict[str, int] = {}
    for status, count in statuses.items():
        segment = status if status in SEGMENTS else TASK_SEGMENT.get(status)
        if segment is not None:
            counts[segment] = counts.get(segment, 0) + count
    return Progress(counts, total, elapsed, running)


def segmented_bar_html(progress: Progress, *, unit: str = "nodes", height: int = 14) -> str:
    """A bar with one segment per status in its colour, and ``done/total · rate · ETA`` beside it."""
    total = max(progress.total, 1)
    segments = []
    for status in SEGMENTS:
        count = progress.counts.get(status, 0)
        if count:
            width = 100.0 * count / total
            segments.append(
                f"<div class='dagger-seg dagger-seg-{status}' title='{count} {status}' "
                f"style='width:{width:.3f}%;background:{STATUS_COLOURS[status]}'></div>"
            )
    words = [f"{progress.done}/{progress.total} {escape(unit)}"]
    if progress.elapsed is not None:
        words.append(format_seconds(progress.elapsed))
    if progress.rate is not None:
        words.append(f"{progress.rate:.3g} {escape(unit)}/s")
    if progress.eta is not None:
        words.append(f"ETA {format_seconds(progress.eta)}")
    return (
        f"<div class='dagger-bar-line' style='display:flex;align-items:center;gap:8px'>"
        f"<div class='dagger-bar' style='display:flex;flex:1;height:{height}px;border:1px solid #bbb;"
        f"border-radius:3px;overflow:hidden;background:#fff'>{''.join(segments)}</div>"
        f"<span class='dagger-bar-text' style='white-space:nowrap;font-size:12px'>{' · '.join(words)}</span></div>"
    )


def legend_html(statuses: Iterable[str], *, edges: Sequence[tuple[str, str]] = ()) -> str:
    """A line naming each status colour and, given ``(style, meaning)`` pairs, each edge style."""
    items = [
        f"<span style='display:inline-block;width:10px;height:10px;border:1px solid #999;"
        f"background:{STATUS_COLOURS.get(status, '#fff')};margin:0 3px 0 8px'></span>{escape(status)}"
        for status in statuses
    ]
    for style, meaning in edges:
        border = "dashed" if style == "dashed" else "dotted" if style == "dotted" else "solid"
        items.append(
            f"<span style='display:inline-block;width:18px;border-top:2px {border} #555;margin:0 3px 3px 10px'>"
            f"</span>{escape(meaning)}"
        )
    return f"<div class='dagger-legend' style='font-size:11px;color:#444'>{''.join(items)}</div>"


def traceback_details(subject: str, message: str, traceback: str | None) -> str:
    """One error: its subject and text once, the traceback folded under it."""
    head = f"<b>{escape(subject)}</b>: <span style='white-space:pre-wrap'>{escape(message)}</span>"
    if not traceback:
        return f"<li>{head}</li>"
    return (
        f"<li><details class='dagger-traceback'><summary>{head}</summary>"
        f"<pre style='font-size:11px;white-space:pre-wrap;margin:2px 0 6px 0'>{escape(traceback)}</pre>"
        f"</details></li>"
    )


def errors_list_html(errors: Sequence[tuple[str, str, str | None]], *, limit: int = 20) -> str:
    """``(subject, message, traceback)`` triples as a list, tracebacks folded; empty when none."""
    if not errors:
        return ""
    items = "".join(traceback_details(*error) for error in errors[:limit])
    more = f"<li>… and {len(errors) - limit} more</li>" if len(errors) > limit else ""
    return f"<div style='color:#b3261e'><b>Errors</b><ul style='margin:0'>{items}{more}</ul></div>"


def logs_html(outcomes: Iterable[Any], *, nodes: int = 10, lines: int = 20) -> str:
    """The last ``lines`` log lines of up to ``nodes`` nodes that printed or logged (running ones first,
    then the latest finished), each folded under its node's name; escaped."""
    return _logs_section(
        [(o.node, o.status, o.logs, o.finished_at or o.started_at or 0) for o in outcomes if o.logs],
        shown=nodes, lines=lines, unit="nodes",
    )


def task_logs_html(tasks: Iterable[Any], *, shown: int = 10, lines: int = 20) -> str:
    """As :func:`logs_html` for task agents: what the last attempt of up to ``shown`` tasks printed or
    logged (the latest updated first), each folded under its task id; escaped."""
    return _logs_section(
        [(t.task_id, str(t.status), t.output.logs, t.updated_at.timestamp())
         for t in tasks if t.output is not None and getattr(t.output, "logs", None)],
        shown=shown, lines=lines, unit="tasks",
    )


def _logs_section(entries: list[tuple[str, str, list[str], float]], *, shown: int, lines: int, unit: str) -> str:
    """``(name, status, logs, when)`` entries as folded log blocks, running ones open and first."""
    if not entries:
        return ""
    entries.sort(key=lambda entry: (entry[1] not in ("running", "in_progress"), -entry[3]))
    items = []
    for name, status, logs, _ in entries[:shown]:
        tail = logs[-lines:]
        hidden = len(logs) - len(tail)
        text = "\n".join(tail) if not hidden else f"… {hidden} earlier lines\n" + "\n".join(tail)
        opened = " open" if status in ("running", "in_progress") else ""
        items.append(
            f"<details class='dagger-node-logs'{opened}><summary>{escape(name)} "
            f"<span style='color:#666'>({len(logs)} lines, {escape(status)})</span></summary>"
            f"<pre style='font-size:11px;white-space:pre-wrap;margin:2px 0 6px 0'>{escape(text)}</pre></details>"
        )
    more = f"<div style='color:#666'>… and {len(entries) - shown} more {unit} with logs</div>" if len(
        entries) > shown else ""
    return f"<div><b>Logs</b>{''.join(items)}{more}</div>"

# -- export ----------------------------------------------------------------------------------------

_PAGE_STYLE = (
    "body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222}"
    "table.nodes{border-collapse:collapse;font-size:13px}"
    "table.nodes td,table.nodes th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}"
    "h2{font-size:16px;margin-top:24px}"
)


def _node_record(outcome: Any) -> dict[str, Any]:
    return {
        "node": outcome.node, "action": outcome.action, "status": outcome.status, "attempts": outcome.attempts,
        "started_at": outcome.started_at, "finished_at": outcome.finished_at, "duration_s": outcome.duration_s,
        "error": outcome.error, "traceback": getattr(outcome, "traceback", None),
        "logs": list(getattr(outcome, "logs", [])), "retry_messages": list(outcome.retry_messages),
        "notes": list(outcome.notes), "worker": outcome.worker,
    }


def report_to_json(report: ExecutionReport, *, indent: int | None = 2) -> str:
    """The run as JSON: its status, times and error, and each node's outcome with traceback and logs.

    Outputs are not included (they are arbitrary objects; they stay in the run's cache).
    """
    document = {
        "run_id": report.run_id, "workflow": report.workflow, "status": report.status, "error": report.error,
        "started_at": report.started_at, "finished_at": report.finished_at, "notes": list(report.notes),
        "counts": report.counts(), "nodes": [_node_record(o) for o in list(report.outcomes.values())],
    }
    return _json_text(document, indent)


def _graph_section(dot: str) -> str:
    from dagger_nb.errors import DaggerError
    from dagger_nb.graph import render_svg

    try:
        svg = render_svg(dot)
    except (DaggerError, OSError) as error:
        return f"<p>The graph could not be drawn ({escape(str(error))}); its DOT:</p><pre>{escape(dot)}</pre>"
    svg = svg[svg.find("<svg"):]
    return svg.replace("<svg", '<svg style="max-width:100%;height:auto"', 1)


def report_to_html(report: ExecutionReport, path: str | os.PathLike[str] | None = None) -> str:
    """A self-contained HTML page of the run (header, progress, node table, graph, timeline, errors with
    their tracebacks, logs), every text escaped; also written to ``path`` when given. Returns the page."""
    outcomes = list(report.outcomes.values())
    elapsed = None if report.started_at is None or report.finished_at is None else (
        report.finished_at - report.started_at)
    progress = progress_of(report.counts(), len(outcomes), elapsed=elapsed, running=False)
    rows = "".join(
        f"<tr><td>{escape(o.node)}</td><td>{escape(o.action)}</td>"
        f"<td style='background:{STATUS_COLOURS.get(o.status, '#fff')}'>{escape(o.status)}</td>"
        f"<td>{o.attempts}</td><td>{'' if o.duration_s is None else f'{o.duration_s:.3f}'}</td>"
        f"<td>{escape(o.error or '')}</td></tr>"
        for o in outcomes
    )
    failed = [(o.node, o.error or "failed", getattr(o, "traceback", None)) for o in outcomes if o.status == "failed"]
    started = "" if report.started_at is None else time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.started_at))
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(report.workflow)} · run {escape(report.run_id)}</title><style>{_PAGE_STYLE}</style>"
        f"</head><body><h1>{escape(report.workflow)} <small>run {escape(report.run_id)}</small></h1>"
        f"<p class='status'><b>{escape(report.status)}</b> · started {escape(started)}"
        f"{' · ' + escape(report.error) if report.error else ''}</p>"
        f"{segmented_bar_html(progress)}"
        f"<h2>Nodes</h2><table class='nodes'><thead><tr><th>node</th><th>action</th><th>status</th>"
        f"<th>attempts</th><th>duration (s)</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<h2>Graph</h2>{_graph_section(report.to_dot())}"
        f"<h2>Timeline</h2>{timeline_svg(run_spans(report), now=report.finished_at) or '<p>No node ran.</p>'}"
        f"<h2>Errors</h2>{errors_list_html(failed, limit=len(failed) or 1) or '<p>None.</p>'}"
        f"<h2>Logs</h2>{logs_html(outcomes, nodes=len(outcomes) or 1, lines=200) or '<p>None.</p>'}"
        f"</body></html>"
    )
    _write_page(path, page)
    return page


def _write_page(path: str | os.PathLike[str] | None, page: str) -> None:
    """Write ``page`` to ``path``, if given; a lone surrogate (from a file name) is written escaped."""
    if path is not None:
        with open(path, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(page)


def _json_text(document: Mapping[str, Any], indent: int | None) -> str:
    """``document`` as JSON that encodes as UTF-8: a lone surrogate becomes its ``\\uXXXX`` escape."""
    return printable(json.dumps(document, indent=indent, default=str, ensure_ascii=False))


def _task_record(task: Any) -> dict[str, Any]:
    output = task.output
    return {
        "task_id": task.task_id, "description": task.description, "agent": task.agent,
        "status": str(task.status), "reason": task.status_reason, "summary": task.summary,
        "parent_task_id": task.parent_task_id, "dependencies": list(task.dependencies),
        "output": None if output is None else output.data, "error": None if output is None else output.error,
        "traceback": task_traceback(task), "logs": None if output is None else getattr(output, "logs", None),
        "created_at": task.created_at.isoformat(), "updated_at": task.updated_at.isoformat(),
    }


def task_traceback(task: Any) -> str | None:
    """The traceback of a task's failed last attempt, if it raised."""
    output = task.output
    return None if output is None else getattr(output, "traceback", None)


def job_report_to_json(report: Any, *, indent: int | None = 2) -> str:
    """A task job's :class:`~dagger_nb.agents.JobReport` as JSON: status, times, usage and every task."""
    counts = {str(status): count for status, count in report.counts().items()}
    document = {
        "job_id": report.job_id, "status": str(report.status), "started_at": report.started_at,
        "finished_at": report.finished_at, "tokens": report.tokens, "cost": report.cost, "error": report.error,
        "counts": counts, "tasks": [_task_record(task) for task in report.outcomes.values()],
    }
    return _json_text(document, indent)


def job_report_to_html(report: Any, path: str | os.PathLike[str] | None = None, *, dot: str | None = None) -> str:
    """A self-contained, escaped HTML page of a task job's report (header, progress, tasks, failures with
    their tracebacks, the tasks' logs, the graph: ``dot``, else drawn from the report's tasks); written to
    ``path`` when given."""
    tasks = list(report.outcomes.values())
    if dot is None:
        from dagger_nb.agents._dot import job_graph

        dot = job_graph({report.job_id: tasks}, name=report.job_id)
    statuses = {str(status): count for status, count in report.counts().items()}
    elapsed = report.finished_at - report.started_at
    bar = segmented_bar_html(progress_of(statuses, len(tasks), elapsed=elapsed, running=False), unit="tasks")
    rows = "".join(
        f"<tr><td>{escape(one_line(t.description, 200))}</td><td>{escape(t.task_id)}</td><td>{escape(t.agent)}</td>"
        f"<td style='background:{STATUS_COLOURS.get(str(t.status), '#fff')}'>{escape(str(t.status))}</td>"
        f"<td>{escape(one_line(t.status_reason or '', 300))}</td>"
        f"<td>{escape(one_line(t.output.data, 300) if t.output is not None and t.output.data else '')}</td></tr>"
        for t in tasks
    )
    failed = [(t.task_id, t.status_reason or str(t.status), task_traceback(t)) for t in tasks
              if str(t.status) in ("failed", "rejected")]
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>job {escape(report.job_id)}</title>"
        f"<style>{_PAGE_STYLE}</style></head><body><h1>job {escape(report.job_id)}</h1>"
        f"<p class='status'><b>{escape(str(report.status))}</b> · started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(report.started_at))}"
        f"{' · ' + escape(report.error) if report.error else ''}</p>{bar}"
        f"<h2>Tasks</h2><table class='nodes'><thead><tr><th>task</th><th>id</th><th>agent</th><th>status</th>"
        f"<th>reason</th><th>output</th></tr></thead><tbody>{rows}</tbody></table>"
        f"{'<h2>Graph</h2>' + _graph_section(dot) if dot else ''}"
        f"<h2>Errors</h2>{errors_list_html(failed, limit=len(failed) or 1) or '<p>None.</p>'}"
        f"<h2>Logs</h2>{task_logs_html(tasks, shown=len(tasks) or 1, lines=200) or '<p>None.</p>'}</body></html>"
    )
    _write_page(path, page)
    return page
