"""A full disk under an incremental run: the run ends failed naming the file, as a run
without incremental mode does; nothing is raised out of ``run``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dagger_nb import ActionRegistry, DagExecutor
from tests.dag.helpers import workflow


def big(i: int) -> np.ndarray:
    return np.arange(40_000) + i  # over the inline limit: a file beside the database


WIDE = workflow("wide", *({"id": f"n{i}", "action": "big", "inputs": [{"name": "i", "value": i}]} for i in range(8)))


# Room, once the filler is gone, for two more runs: each stores its 8 values (2.5 MB) in the run
# database and, incremental, in the stored results too, with the WAL beside them.
@pytest.mark.tmpfs_size("32m")
@pytest.mark.parametrize("incremental", [True, False])
def test_a_run_on_a_full_disk_fails_naming_the_file(
    small_tmpfs: Path, fill_disk: Callable[[Path], int], incremental: bool
) -> None:
    db = small_tmpfs / "runs.db"
    registry = ActionRegistry()
    registry.register("big", big)
    runs = DagExecutor(registry, db=db, incremental=incremental)
    runs.add_workflow(WIDE)
    fill_disk(small_tmpfs)
    try:
        report = runs.run_sync("wide")
        assert report.status == "failed"
        assert report.error is not None and f"'{db}'" in report.error and "disk is full" in report.error
        (small_tmpfs / "filler").unlink()
        # room again: the same executor runs (and, incremental, stores) as usual
        again = runs.run_sync("wide")
        assert again.status == "succeeded" and again.counts() == {"succeeded": 8}
        if incremental:
            reused = runs.run_sync("wide")
            assert reused.counts() == {"cached": 8}, reused.error
    finally:
        runs.close()
