"""Tables of tasks: a flat DataFrame (:meth:`TaskManager.tasks_frame`) and a job report's HTML."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from dagger_nb.agents._dot import TASK_COLOURS
from dagger_nb.agents.model import Task

if TYPE_CHECKING:
    import pandas as pd

    from dagger_nb.agents.job import JobReport

#: The columns of :meth:`TaskManager.tasks_frame` and :meth:`JobReport.to_frame`: plain values
#: only (statuses and types as their text, links as comma-separated ids, data as JSON text).
FRAME_COLUMNS = [
    "job_id", "task_id", "parent_task_id", "task_type", "description", "acceptance_criteria", "agent",
    "status", "status_reason", "dependencies", "input", "output", "error", "timeout", "max_retries",
    "retry_count", "created_at", "updated_at", "summary", "tokens", "cost", "models",
]


def tasks_to_frame(tasks: list[Task]) -> pd.DataFrame:
    """One row per task, the columns of :data:`FRAME_COLUMNS`."""
    import pandas as pd

    rows = [_row(task) for task in tasks]
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    for column in ("created_at", "updated_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _row(task: Task) -> tuple[Any, ...]:
    output = task.output
    return (
        task.job_id, task.task_id, task.parent_task_id, str(task.task_type), task.description,
        task.acceptance_criteria, task.agent, str(task.status), task.status_reason, ", ".join(task.dependencies),
        _json(task.input), None if output is None or output.data is None else _json(output.data),
        None if output is None else output.error, task.timeout, task.max_retries, task.retry_count,
        task.created_at, task.updated_at, task.summary, task.tokens, task.cost, ", ".join(task.models),
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def report_html(report: JobReport, *, limit: int = 200) -> str:
    """An escaped HTML summary and task table of ``report`` (at most ``limit`` rows)."""
    e = html.escape
    counts = ", ".join(f"{count} {e(str(status))}" for status, count in report.counts().items())
    status = str(report.status)
    header = (
        f"<b>job {e(report.job_id)}</b>: <span style='background:{TASK_COLOURS.get(status, '#fff')};"
        f"padding:0 4px'>{e(status)}</span> ({counts}){_usage(report)}"
    )
    if report.error is not None:
        header += f"<br><span style='color:#b3261e'>{e(report.error)}</span>"
    rows = []
    tasks = list(report.outcomes.values())
    for task in tasks[:limit]:
        colour = TASK_COLOURS.get(str(task.status), "#fff")
        rows.append(
            f"<tr><td>{e(task.task_id)}</td><td>{e(task.description)}</td><td>{e(task.agent)}</td>"
            f"<td style='background:{colour}'>{e(str(task.status))}</td><td>{task.retry_count + 1}</td>"
            f"<td>{e(task.status_reason or '')}</td></tr>"
        )
    more = len(tasks) - limit
    footer = f"<p>… and {more} more task{'s' if more != 1 else ''}</p>" if more > 0 else ""
    return (
        f"<div class='dagger-job-report'><p>{header}</p><table><thead><tr><th>task</th><th>description</th>"
        f"<th>agent</th><th>status</th><th>attempts</th><th>reason</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{footer}</div>"
    )


def _usage(report: JobReport) -> str:
    if not report.tokens and report.cost is None:
        return ""
    cost = "" if report.cost is None else f", cost {report.cost:g}"
    return f" · {report.tokens:,} tokens{cost}"
