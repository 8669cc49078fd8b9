"""A full disk under a TaskManager used on an event loop (a notebook cell, async code).

There a change is written when the loop's step ends (group commit), after the call
returned: a write that fails then must not vanish into the loop's exception log. The
manager's next change, job run or close raises it, naming the file, and what it could not
write is kept and written once the disk has room again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import dagger_nb
from dagger_nb.errors import StorageError

BIG = "x" * 20_000  # a few pages per task: each commit needs new room in the WAL


def registry() -> dagger_nb.TaskAgentRegistry:
    agents = dagger_nb.TaskAgentRegistry()
    agents.register("leaf", lambda input, ctx: {"v": 1})
    return agents


def stored_ids(db: Path) -> set[str]:
    with dagger_nb.TaskManager(db, registry=registry(), heartbeat_interval=None) as manager:
        return {task.task_id for task in manager.tasks()}


@pytest.mark.tmpfs_size("1m")
def test_a_deferred_write_that_fails_is_raised_by_the_next_call_and_kept_for_later(
    small_tmpfs: Path, fill_disk: Callable[[Path], int]
) -> None:
    db = small_tmpfs / "tasks.db"
    manager = dagger_nb.TaskManager(db, registry=registry(), heartbeat_interval=None)
    acknowledged: list[str] = []

    async def main() -> None:
        acknowledged.append(manager.add_objective("j0", BIG, "leaf", task_id="g0"))
        await anyio.lowlevel.checkpoint()  # written when the step ends
        fill_disk(small_tmpfs)
        with pytest.raises(StorageError, match=rf"cannot write tasks to '{db}': database or disk is full"):
            for n in range(1, 200):
                acknowledged.append(manager.add_objective(f"j{n}", BIG, "leaf", task_id=f"g{n}"))
                await anyio.lowlevel.checkpoint()
        assert len(acknowledged) == 2  # the call after the failed write raised, not the 199th
        with pytest.raises(StorageError, match="database or disk is full"):  # still no room: again
            manager.update_task_status("g0", "blocked", "wait")
        (small_tmpfs / "filler").unlink()
        # room again: the next call writes what waited, then goes on
        acknowledged.append(manager.add_objective("after", BIG, "leaf", task_id="after"))
        await anyio.lowlevel.checkpoint()

    anyio.run(main)
    manager.close()
    assert stored_ids(db) == set(acknowledged)


@pytest.mark.tmpfs_size("1m")
def test_close_raises_a_deferred_write_that_still_cannot_be_made(
    small_tmpfs: Path, fill_disk: Callable[[Path], int]
) -> None:
    db = small_tmpfs / "tasks.db"
    manager = dagger_nb.TaskManager(db, registry=registry(), heartbeat_interval=None)

    async def main() -> None:
        manager.add_objective("j0", BIG, "leaf", task_id="g0")
        await anyio.lowlevel.checkpoint()
        fill_disk(small_tmpfs)
        manager.add_objective("j1", BIG, "leaf", task_id="g1")
        await anyio.lowlevel.checkpoint()  # this write fails, with nobody to tell yet

    anyio.run(main)
    with pytest.raises(StorageError, match=rf"cannot write tasks to '{db}': database or disk is full"):
        manager.close()
    (small_tmpfs / "filler").unlink()
    assert stored_ids(db) == {"g0"}  # the file is released, and holds what was written


@pytest.mark.tmpfs_size("1m")
def test_a_job_run_after_a_failed_deferred_write_fails_with_storage_error(
    small_tmpfs: Path, fill_disk: Callable[[Path], int]
) -> None:
    db = small_tmpfs / "tasks.db"
    manager = dagger_nb.TaskManager(db, registry=registry(), heartbeat_interval=None)
    events: list[dagger_nb.JobEvent] = []

    async def main() -> None:
        manager.add_objective("j0", BIG, "leaf", task_id="g0")
        await anyio.lowlevel.checkpoint()
        fill_disk(small_tmpfs)
        manager.add_objective("job", BIG, "leaf", task_id="goal")
        await anyio.lowlevel.checkpoint()
        with pytest.raises(StorageError, match=rf"cannot write tasks to '{db}': database or disk is full"):
            await manager.run("job")
        with pytest.raises(StorageError, match=rf"'{db}'"):
            handle = manager.start("job")
            events.extend(handle.events.history)

    anyio.run(main)
    assert not any(isinstance(event, dagger_nb.TaskCompleted) for event in events)
    assert manager.get_task("goal").status is dagger_nb.TaskStatus.PENDING  # type: ignore[union-attr]
    (small_tmpfs / "filler").unlink()
    manager.close()  # room again: what waited is written now
    assert stored_ids(db) == {"g0", "goal"}
