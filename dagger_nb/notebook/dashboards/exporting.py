"""``%dagger_export ID FILE``: write a run's or a task job's report as an HTML page or JSON.

The format follows the file's extension (``.html``/``.htm`` or ``.json``). A run
or a job still under way is written as it is now.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from dagger_nb.notebook.session import Session

_FORMATS = {".html": "html", ".htm": "html", ".json": "json"}


def export_format(path: str | os.PathLike[str]) -> str:
    """``html`` or ``json`` from ``path``'s extension; a :class:`UsageError` naming the choices otherwise."""
    suffix = Path(path).suffix.lower()
    try:
        return _FORMATS[suffix]
    except KeyError:
        raise UsageError(
            f"cannot tell the format of '{os.fspath(path)}' from its extension: use .html (a page) or .json"
        ) from None


def export(session: Session, key: str, path: str | os.PathLike[str]) -> str:
    """Write run or job ``key`` of ``session`` to ``path``; a line saying what was written."""
    fmt = export_format(path)
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise UsageError(f"cannot write '{target}': folder '{target.parent}' does not exist")
    if session.knows_run(key):
        handle = session.handle(key)
        report: Any = handle.report or handle.snapshot()
        what = f"run {key} ({report.status})"
    elif key in session.job_ids():
        report = job_report(session, key)
        what = f"job {key} ({report.status})"
    else:
        raise UsageError(f"no run or job with id '{key}' in this session")
    try:
        if fmt == "html":
            report.to_html(target)
        else:
            target.write_text(report.to_json(), encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write '{target}': {error.strerror or error}") from None
    return f"wrote {what} to {target}"


def job_report(session: Session, job_id: str) -> Any:
    """The report of job ``job_id``: the finished run's, else the tasks as they are now."""
    from dagger_nb.agents import JobReport
    from dagger_nb.agents.model import JobStatus

    handle = session.jobs.get(job_id)
    if handle is not None and handle.report is not None:
        return handle.report
    manager = session.task_manager
    tasks = manager.tasks(job_id)
    now = time.time()
    started = min((task.created_at.timestamp() for task in tasks), default=now)
    usage = manager.job_usage(job_id)
    return JobReport(job_id, manager.job_status(job_id) or JobStatus.RUNNING, {t.task_id: t for t in tasks},
                     started, now, tokens=usage.tokens, cost=usage.cost)
