"""Task jobs with a database under SIGKILL and a full disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import dagger_nb
from dagger_nb.errors import StorageError
from tests.reliability.agents_scenario import crash_matrix


def test_killed_planner_jobs_resume_without_losing_or_redoing_work(tmp_path: Path) -> None:
    counts = crash_matrix(kills=5, items=240, workdir=tmp_path, seed=29)
    assert counts["kills"] >= 3, counts  # the scenario must really have killed the job mid-way
    assert counts["lost"] == 0, counts
    assert counts["stuck"] == 0, counts
    assert counts["redone"] <= counts["in_flight_allowance"], counts


def stored_ids(manager: dagger_nb.TaskManager) -> set[str]:
    return {task.task_id for task in manager.tasks()}


@pytest.mark.tmpfs_size("1m")
def test_a_full_disk_raises_storage_error_and_keeps_what_was_acknowledged(
    small_tmpfs: Path, fill_disk: Callable[[Path], int]
) -> None:
    db = small_tmpfs / "tasks.db"
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("big", lambda input, ctx: {"text": "x" * 20_000})
    manager = dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None)
    acknowledged = {manager.add_task("early", f"task {n}", "big", task_id=f"early-{n}") for n in range(10)}
    fill_disk(small_tmpfs)
    with pytest.raises(StorageError, match=rf"cannot write tasks to '{db}': database or disk is full"):
        for n in range(1000):
            acknowledged.add(manager.add_task("late", f"task {n}", "big", task_id=f"late-{n}"))
    (small_tmpfs / "filler").unlink()  # room again: the failed change is written with the next one
    manager.close()

    reopened = dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None)
    assert acknowledged <= stored_ids(reopened)
    reopened.close()


@pytest.mark.tmpfs_size("1m")
def test_a_disk_filling_up_under_a_job_fails_it_with_storage_error(small_tmpfs: Path) -> None:
    db = small_tmpfs / "tasks.db"
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 128 * 1024)  # freed afterwards, to reopen the file
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("big", lambda input, ctx: {"text": str(input["n"]) * 30_000})
    manager = dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None, max_parallel_tasks=2)
    for n in range(60):
        manager.add_task("fill", f"task {n}", "big", {"n": n}, task_id=f"t{n}")
    seen: list[dagger_nb.JobEvent] = []

    async def run() -> dagger_nb.JobHandle:
        handle = manager.start("fill")
        await handle.wait()
        seen.extend(handle.events.history)
        return handle

    handle = anyio.run(run)
    assert handle.status is dagger_nb.JobStatus.FAILED and isinstance(handle.error, StorageError)
    assert handle.report is not None and f"'{db}': database or disk is full" in (handle.report.error or "")
    completed = {event.task_id for event in seen if isinstance(event, dagger_nb.TaskCompleted)}
    assert completed  # some outputs fitted before the disk was full
    with pytest.raises(StorageError, match="database or disk is full"):
        manager.close()  # what could not be written is reported again, and the file is released
    ballast.unlink()

    reopened = dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None)
    for task_id in completed:  # every completion announced is in the file
        task = reopened.get_task(task_id)
        assert task is not None and task.status == "completed", task_id
    reopened.close()
