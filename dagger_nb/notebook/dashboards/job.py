"""The live dashboard of a task job (:class:`JobDashboard`): tasks, agents, graph, errors and logs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from dagger_nb.export import (
    errors_list_html,
    legend_html,
    one_line,
    progress_of,
    segmented_bar_html,
    short_id,
    task_logs_html,
    task_traceback,
)
from dagger_nb.notebook.dashboards._base import Dashboard, header_html, table_html, usage_cell, usage_text

if TYPE_CHECKING:
    from dagger_nb.agents import JobHandle, TaskManager
    from dagger_nb.agents.model import TaskRecord

_TASK_COLUMNS = ("task", "id", "agent", "status", "reason")
_TASK_LEGEND = ("pending", "in_progress", "completed", "failed", "blocked", "accepted", "rejected")
_JOB_EDGES = (("solid", "depends on"), ("dashed", "parent → subtask"))
_TASK_ORDER = {"failed": 0, "rejected": 0, "in_progress": 1, "blocked": 2, "completed": 3, "accepted": 3,
               "pending": 4}


class JobDashboard(Dashboard):
    """A live view of task job ``job_id``: header, progress, task table, per-agent panel, graph,
    errors, what the tasks printed or logged, Cancel.

    Pass the :class:`~dagger_nb.agents.JobHandle` (``handle=``) of a running job to follow
    it live; without one the dashboard shows the job as stored (call :meth:`refresh`).
    Options as for :class:`~dagger_nb.notebook.RunDashboard`.
    """

    def __init__(self, manager: TaskManager, job_id: str, *, handle: JobHandle | None = None,
                 **options: Any) -> None:
        manager.job_status(job_id)  # raises for an unknown job before any widget is made
        super().__init__(agent_panel=True, cancellable=handle is not None, **options)
        #: What the tasks' last attempts printed or logged, folded per task.
        self.logs = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.logs.add_class("dagger-logs")
        children: list[Any] = list(self.children)  # type: ignore[has-type]
        children.insert(children.index(self.errors) + 1, self.logs)
        self.children = children
        self.manager = manager
        self.job_id = job_id
        self.handle = handle
        self.add_class("dagger-job-dashboard")
        self._started = time.time()
        self._ended: float | None = None
        #: The job's final status, from its ``JobFinished`` event (before the handle has its report).
        self.final_status: str | None = None
        if handle is not None and not handle.done:
            handle.add_listener(self._on_event)
            self.refresh()
            self.start_clock()
        else:
            self.finish()

    def _on_event(self, event: object) -> None:
        if type(event).__name__ == "JobFinished":
            self._ended = time.time()
            self.final_status = str(getattr(event, "status", "")) or None
            self.finish()
        else:
            self.changed()

    def cancel(self) -> None:
        """Cancel the job."""
        if self.handle is not None:
            self.handle.cancel()

    async def wait(self) -> Any:
        """Wait for the job and re-send the final state from the waiting cell; returns the report."""
        if self.handle is None:
            return None
        report = await self.handle.wait()
        self.finish()
        self.send_final_state()
        return report

    def draw(self, *, final: bool) -> None:
        """Rebuild the panels from the manager's tasks."""
        tasks = _read_only_tasks(self.manager, self.job_id)
        counts: dict[str, int] = {}
        for task in tasks:
            counts[str(task.status)] = counts.get(str(task.status), 0) + 1
        if self.final_status is not None:
            status = self.final_status
        elif self.handle is not None:
            status = str(self.handle.status)
        else:
            status = str(self.manager.job_status(self.job_id) or "pending")
        end = self._ended or time.time()
        elapsed = end - self._started
        usage_of = self._usage(tasks)
        tokens, cost = 0, None
        for task_tokens, task_cost, _models in usage_of.values():
            tokens += task_tokens
            if task_cost is not None:
                cost = task_cost if cost is None else cost + task_cost
        usage = usage_text(tokens, cost, self.manager.max_tokens)
        self.header.value = header_html(f"job {self.job_id}", status, counts, elapsed, extra=usage)
        self.progress.value = segmented_bar_html(
            progress_of(counts, len(tasks), elapsed=elapsed, running=not final), unit="tasks"
        )
        self.table.value = self._table(tasks, usage_of)
        assert self.agent_panel is not None
        self.agent_panel.value = _agents_html(tasks)
        broken = [(t.task_id, t.status_reason or str(t.status), task_traceback(t)) for t in tasks
                  if str(t.status) in ("failed", "rejected")]
        self.errors.value = errors_list_html(broken)
        self.logs.value = task_logs_html(tasks)
        self.graph.update(lambda: self.manager.to_dot(self.job_id), len(tasks), final=final,
                          version=self.events_seen)
        self.legend.value = legend_html(_TASK_LEGEND, edges=_JOB_EDGES)

    def _widgets(self) -> list[Any]:
        return [*super()._widgets(), self.logs]

    def _usage(self, tasks: list[TaskRecord]) -> dict[str, tuple[int, float | None, list[str]]]:
        """Per task: its tokens, cost and models, with what its running attempt reported so far (an
        attempt's usage joins the task when the attempt ends)."""
        handle = self.handle if self.handle is not None and not self.handle.done else None
        usage: dict[str, tuple[int, float | None, list[str]]] = {}
        for task in tasks:
            tokens, cost, models = task.tokens, task.cost, list(task.models)
            in_progress = str(task.status) == "in_progress"
            live = handle.running_usage(task.task_id) if handle is not None and in_progress else None
            if live is not None:
                tokens += live.tokens
                if live.cost is not None:
                    cost = live.cost if cost is None else cost + live.cost
                models += [model for model in live.models if model not in models]
            usage[task.task_id] = (tokens, cost, models)
        return usage

    def _table(self, tasks: list[TaskRecord], usage_of: dict[str, tuple[int, float | None, list[str]]]) -> str:
        ordered = list(tasks)
        if len(ordered) > self.table_rows:
            ordered.sort(key=lambda t: (_TASK_ORDER.get(str(t.status), 9), -t.updated_at.timestamp()))
        shown = ordered[: self.table_rows]
        rows: list[tuple[object, ...]] = [(one_line(t.description, 80), short_id(t.task_id), t.agent,
                                            str(t.status), one_line(t.status_reason or "", 100)) for t in shown]
        columns: tuple[str, ...] = _TASK_COLUMNS
        if any(tokens or cost is not None or models for tokens, cost, models in usage_of.values()):
            columns += ("tokens",)  # only where a task reported usage
            rows = [(*row, usage_cell(*usage_of[t.task_id])) for row, t in zip(rows, shown, strict=True)]
        return table_html(columns, rows, status_column=3, more=len(ordered) - len(shown), nowrap=(1,))


def _read_only_tasks(manager: TaskManager, job_id: str) -> list[TaskRecord]:
    """The job's tasks for drawing, read in place: ``manager.tasks`` copies every task, input and
    output, which cost a big job's dashboard more than its run. Safe because a draw runs on the
    job's loop between two of its steps and only reads; nothing drawn keeps a reference."""
    manager.job_status(job_id)  # an unknown job (or a closed manager) raises here
    return list(manager.iter_tasks(job_id))


def _agents_html(tasks: list[TaskRecord]) -> str:
    """Per agent: running, pending, completed, failed, and its latest task's message."""
    per: dict[str, dict[str, Any]] = {}
    for task in tasks:
        row = per.setdefault(task.agent, {"in_progress": 0, "pending": 0, "done": 0, "failed": 0,
                                          "last": None})
        status = str(task.status)
        key = "done" if status in ("completed", "accepted") else "failed" if status in (
            "failed", "rejected") else "in_progress" if status == "in_progress" else "pending"
        row[key] += 1
        if row["last"] is None or task.updated_at >= row["last"].updated_at:
            row["last"] = task
    rows = []
    for agent, row in sorted(per.items()):
        last = row["last"]
        message = last.status_reason or last.summary or (
            last.output.data if last.output is not None and last.output.data else "")
        state = "running" if row["in_progress"] else "idle"
        label = short_id(last.task_id)
        rows.append((agent, state, row["in_progress"], row["pending"], row["done"], row["failed"],
                     f"{label}: {one_line(message)}" if message else label))
    return table_html(("agent", "state", "running", "waiting", "completed", "failed", "last message"),
                      rows, status_column=1, more=0)


__all__ = ["JobDashboard"]
