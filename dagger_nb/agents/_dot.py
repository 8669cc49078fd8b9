"""Graphviz DOT of task jobs: status colours, dependency edges, dashed parent → child edges."""

from __future__ import annotations

from dagger_nb.agents.model import TaskRecord
from dagger_nb.graph import STATUS_COLOURS, Digraph

#: Task fill colours; pending tasks are grey so they stand out from the white background.
TASK_COLOURS = {**STATUS_COLOURS, "pending": "#d9d9d9"}


def job_graph(jobs: dict[str, list[TaskRecord]], *, name: str | None) -> str:
    """DOT for ``jobs`` (job id → tasks); with several jobs each one is a labelled cluster."""
    dot = Digraph(name or "task jobs", rankdir="TB")
    for job_id, tasks in jobs.items():
        for task in tasks:
            dot.node(
                task.task_id,
                label=f"{task.description}\n{task.agent} · {task.status}",
                tooltip=task.status_reason or task.task_id,
                fillcolor=TASK_COLOURS.get(str(task.status), "white"),
            )
        for task in tasks:
            for dep in task.dependencies:
                dot.edge(dep, task.task_id)
            if task.parent_task_id is not None:
                dot.edge(task.parent_task_id, task.task_id, style="dashed", arrowhead="none", color="#888888")
        if len(jobs) > 1:
            dot.cluster(job_id, f"job {job_id}", [task.task_id for task in tasks])
    return dot.source()
