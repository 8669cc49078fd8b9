"""Checks on a job's task graph: what is wrong with a new task, and dependency paths (cycles)."""

from __future__ import annotations

from collections.abc import Mapping

from dagger_nb.agents.model import TaskRecord

#: The largest ``max_retries`` a task may have: a runaway retry loop stays bounded.
MAX_RETRIES = 1000


def task_problems(
    tasks: Mapping[str, TaskRecord], job_id: str, task_id: str, dependencies: tuple[str, ...], parent: str | None
) -> list[str]:
    """Every reason why ``task_id`` cannot be added to ``job_id`` with these links."""
    problems = []
    if not task_id:
        problems.append("task id must not be empty")
    elif task_id in tasks:
        problems.append(f"task id '{task_id}' already exists (in job '{tasks[task_id].job_id}')")
    for dep in dependencies:
        if dep == task_id:
            problems.append(f"task '{task_id}' cannot depend on itself")
        elif dep not in tasks:
            problems.append(f"unknown dependency '{dep}'")
        elif tasks[dep].job_id != job_id:
            problems.append(f"dependency '{dep}' belongs to another job ('{tasks[dep].job_id}')")
    if parent is not None and parent not in tasks:
        problems.append(f"unknown parent task '{parent}'")
    return problems


def retry_problem(max_retries: object) -> str | None:
    """Why ``max_retries`` is not acceptable, or None."""
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= MAX_RETRIES:
        return f"max_retries must be a whole number from 0 to {MAX_RETRIES:,}, got {max_retries!r}"
    return None


def timeout_problem(timeout: object) -> str | None:
    """Why ``timeout`` is not a number of seconds (a boolean is not one), or None."""
    if isinstance(timeout, bool):
        return f"timeout must be a number of seconds (or None), got {timeout!r}"
    return None


def dependency_path(tasks: Mapping[str, TaskRecord], start: str, goal: str) -> list[str] | None:
    """A dependency path ``start -> ... -> goal``, if ``start`` (transitively) depends on ``goal``."""
    parents: dict[str, str | None] = {start: None}
    stack = [start]
    while stack:
        current = stack.pop()
        if current == goal:
            path = [current]
            while (previous := parents[path[-1]]) is not None:
                path.append(previous)
            return path[::-1]
        for dep in tasks[current].dependencies:
            if dep not in parents:
                parents[dep] = current
                stack.append(dep)
    return None
