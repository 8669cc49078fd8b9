"""A TaskManager whose file a later one took over (a re-run notebook cell) is closed for good:
it refuses every call instead of keeping changes in memory that never reach the file, and the
later manager never runs a task while an attempt of the earlier one still runs it."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import dagger_nb

CLOSED = r"closed: a later TaskManager took '.*jobs\.db' over"


def stored_task_ids(db: Path) -> list[str]:
    connection = sqlite3.connect(db)
    try:
        return [row[0] for row in connection.execute("SELECT task_id FROM agent_tasks ORDER BY seq")]
    finally:
        connection.close()


def echo_registry() -> dagger_nb.TaskAgentRegistry:
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("echo", lambda input, ctx: input)
    return registry


def take_over(db: Path, registry: dagger_nb.TaskAgentRegistry, **options: Any) -> dagger_nb.TaskManager:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dagger_nb.DaggerWarning)
        return dagger_nb.TaskManager(db, registry=registry, **options)


def test_every_call_on_a_taken_over_manager_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    registry = echo_registry()
    earlier = dagger_nb.TaskManager(db, registry=registry)
    earlier.add_objective("job", "goal", "echo", task_id="goal")
    later = take_over(db, registry)

    calls: dict[str, Callable[[], object]] = {
        "add_objective": lambda: earlier.add_objective("other", "x", "echo"),
        "add_story": lambda: earlier.add_story("job", "s", "echo", parent="goal"),
        "add_task": lambda: earlier.add_task("job", "late", "echo", task_id="late"),
        "add_dependency": lambda: earlier.add_dependency("goal", "goal"),
        "update_task_status": lambda: earlier.update_task_status("goal", "completed"),
        "get_task": lambda: earlier.get_task("goal"),
        "tasks": lambda: earlier.tasks("job"),
        "tasks_frame": lambda: earlier.tasks_frame("job"),
        "jobs": earlier.jobs,
        "job_status": lambda: earlier.job_status("job"),
        "job_usage": lambda: earlier.job_usage("job"),
        "get_objective": lambda: earlier.get_objective("job"),
        "get_dependency_outputs": lambda: earlier.get_dependency_outputs("goal"),
        "to_dot": earlier.to_dot,
        "run_sync": lambda: earlier.run_sync("job"),
        "running_jobs": earlier.running_jobs,
    }
    for name, call in calls.items():
        with pytest.raises(dagger_nb.StorageError, match=CLOSED):
            call()
        assert name  # (the name shows in the failure's locals)
    earlier.close()  # closing what is already closed is fine
    assert stored_task_ids(db) == ["goal"]
    assert [task.task_id for task in later.tasks("job")] == ["goal"]
    assert later.get_task("goal").status is dagger_nb.TaskStatus.PENDING  # type: ignore[union-attr]
    later.close()
    with dagger_nb.TaskManager(db, registry=registry) as reopened:
        assert [task.task_id for task in reopened.tasks()] == ["goal"]
        assert reopened.job_status("job") is None  # the refused run never ran


@pytest.mark.anyio
async def test_start_and_run_on_a_taken_over_manager_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    registry = echo_registry()
    earlier = dagger_nb.TaskManager(db, registry=registry)
    earlier.add_objective("job", "goal", "echo", task_id="goal")
    later = take_over(db, registry)
    with pytest.raises(dagger_nb.StorageError, match=CLOSED):
        earlier.start("job")
    with pytest.raises(dagger_nb.StorageError, match=CLOSED):
        await earlier.run("job")
    await earlier.aclose()
    report = await later.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    await later.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["same step", "another thread"])
async def test_a_take_over_cancels_the_earlier_managers_jobs(tmp_path: Path, where: str) -> None:
    """In the same step as ``start`` (the job has not begun: it ends at once), or from another
    thread while the job runs (the cancel is carried to the job's loop)."""
    db = tmp_path / "jobs.db"
    registry = echo_registry()
    started, release = anyio.Event(), anyio.Event()

    async def gated(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"done": True}

    registry.register("gated", gated)
    earlier = dagger_nb.TaskManager(db, registry=registry)
    earlier.add_objective("job", "goal", "gated", task_id="goal")
    handle = earlier.start("job")
    if where == "same step":
        later = take_over(db, registry)
    else:
        await started.wait()
        later = await anyio.to_thread.run_sync(take_over, db, registry)
    with anyio.fail_after(10):
        report = await handle
    assert report.status is dagger_nb.JobStatus.CANCELLED
    assert report.outcomes["goal"].status is dagger_nb.TaskStatus.PENDING
    assert started.is_set() is (where == "another thread")
    release.set()
    assert (await later.run("job")).status is dagger_nb.JobStatus.COMPLETED
    await earlier.aclose()
    await later.aclose()
