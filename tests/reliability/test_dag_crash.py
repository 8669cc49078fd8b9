"""DAG runs with ``db=`` under SIGKILL and a full disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.errors import StorageError
from tests.dag.helpers import executor_with, workflow
from tests.reliability.dag_scenario import crash_matrix, dynamic_crash_matrix


def test_killed_runs_resume_without_losing_or_redoing_finished_nodes(tmp_path: Path) -> None:
    counts = crash_matrix(kills=4, items=400, workdir=tmp_path, seed=23)
    assert counts["kills"] >= 2, counts  # the scenario must really have killed the run mid-way
    assert counts["lost"] == 0, counts
    assert counts["stuck"] == 0, counts
    assert counts["redone"] <= counts["in_flight_allowance"], counts


def test_a_supervisor_step_killed_mid_step_resumes_from_a_clean_slate(tmp_path: Path) -> None:
    # A step's tool nodes are stored with the step: a kill while it thinks forgets them, the step
    # runs again and adds them again; no tool of a committed step runs twice, no orphan is left.
    counts = dynamic_crash_matrix(kills=4, steps=8, workdir=tmp_path, seed=3)
    assert counts["kills"] >= 2, counts
    assert counts["lost"] == 0, counts
    assert counts["orphans"] == 0, counts
    assert counts["stuck"] == 0, counts
    assert counts["redone"] <= counts["in_flight_allowance"], counts


@pytest.mark.tmpfs_size("1m")
def test_a_full_disk_ends_the_run_failed_naming_the_file(small_tmpfs: Path) -> None:
    registry = ActionRegistry()
    registry.register("big", lambda index: f"{index}" * 100_000)
    nodes = [{"id": f"b{index}", "action": "big", "inputs": [{"name": "index", "value": index}]}
             for index in range(40)]
    db = small_tmpfs / "runs.db"
    executor = executor_with(registry, workflow("fill", *nodes, max_parallel_nodes=2), db=db)

    report = executor.run_sync("fill")

    assert report.status == "failed"
    assert report.error is not None and str(db) in report.error and "full" in report.error
    assert report.error.startswith("cannot record"), report.error  # ours, not sqlite3's
    assert executor.runs_frame()["status"].tolist() == ["failed"]
    executor.close()
    # Reopened on the full disk, the file is either readable, and the run is not "running",
    # or refused with a StorageError: never a raw sqlite3 error.
    try:
        reopened = DagExecutor(registry, db=db)
    except StorageError as refused:
        assert str(db) in str(refused)
    else:
        assert reopened.runs_frame()["status"].tolist() in (["failed"], ["interrupted"])
        reopened.close()


@pytest.mark.tmpfs_size("1m")
def test_a_run_that_cannot_even_be_recorded_fails_cleanly(
    small_tmpfs: Path, fill_disk: Callable[[Path], int]
) -> None:
    registry = ActionRegistry()
    registry.register("one", lambda: 1)
    nodes = [{"id": f"n{index}", "action": "one", "description": "x" * 2000} for index in range(400)]
    executor = executor_with(registry, workflow("big-spec", *nodes), db=small_tmpfs / "runs.db")
    fill_disk(small_tmpfs)

    report = executor.run_sync("big-spec")

    assert report.status == "failed"
    assert report.error is not None and str(small_tmpfs / "runs.db") in report.error
    assert report.counts() == {"pending": 400}  # nothing ran: nothing of it could have been recorded
    executor.close()
