"""Incremental runs on the Dask backend: reused nodes are not sent to the cluster, changed ones are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.backends.dask import DaskBackend
from dagger_nb.dag import incremental
from dagger_nb.dag.fingerprint import is_big
from dagger_nb.dag.results import ResultStore
from tests.dag.helpers import workflow

pytest.importorskip("distributed")

pytestmark = pytest.mark.anyio

SPEC = workflow(
    "frames",
    {"id": "make", "action": "make", "inputs": [{"name": "rows", "reference": "inputs.rows"}]},
    {"id": "total", "action": "total", "inputs": [{"name": "frame", "reference": "make.result"}]},
)


def make(rows: int) -> Any:
    import os

    import pandas as pd

    return pd.DataFrame({"a": range(rows), "pid": os.getpid()})


def total(frame: Any) -> int:
    return int(frame["a"].sum())


def total_plus_one(frame: Any) -> int:
    return int(frame["a"].sum()) + 1


def executor(db: Path, backend: DaskBackend, **actions: Any) -> DagExecutor:
    registry = ActionRegistry()
    for name, fn in {"make": make, "total": total, **actions}.items():
        registry.register(name, fn)
    made = DagExecutor(registry, db=db, backend=backend, incremental=True)
    made.add_workflow(SPEC)
    return made


async def test_unchanged_nodes_are_reused_and_changed_ones_run_on_workers(
    tmp_path: Path, backend: DaskBackend, dask_client: Any
) -> None:
    db = tmp_path / "runs.db"
    first = executor(db, backend)
    report = await first.run("frames", inputs={"rows": 1000})
    first.close()
    assert report.success, report.error
    workers = set(dask_client.scheduler_info()["workers"])
    assert {o.worker for o in report.outcomes.values()} <= workers

    again = executor(db, backend)
    reused = await again.run("frames", inputs={"rows": 1000})
    again.close()
    assert {n: o.status for n, o in reused.outcomes.items()} == {"make": "cached", "total": "cached"}
    assert reused.cache.get("total", "result") == 499500

    edited = executor(db, backend, total=total_plus_one)
    changed = await edited.run("frames", inputs={"rows": 1000})
    edited.close()
    assert {n: o.status for n, o in changed.outcomes.items()} == {"make": "cached", "total": "succeeded"}
    assert changed.outcomes["total"].worker in workers and changed.outcomes["total"].reason == "code changed"
    assert changed.cache.get("total", "result") == 499501


#: two int64 columns of this many rows are over fingerprint.BIG_VALUE_BYTES
BIG_ROWS = 200_000


async def test_big_outputs_are_fingerprinted_on_the_worker_and_reused(
    tmp_path: Path, backend: DaskBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = incremental.value_fingerprint
    hashed_here: list[str] = []

    def counting(value: Any) -> str:  # the notebook side's hashing (workers are other processes)
        if is_big(value):
            hashed_here.append(type(value).__name__)
        return real(value)

    monkeypatch.setattr(incremental, "value_fingerprint", counting)

    # in this process the big frame is hashed here: the counter sees it
    local = DagExecutor(ActionRegistry(), db=tmp_path / "local.db", incremental=True)
    local.registry.register("make", make)
    local.registry.register("total", total)
    local.add_workflow(SPEC)
    assert (await local.run("frames", inputs={"rows": BIG_ROWS})).success
    local.close()
    assert hashed_here == ["DataFrame"]
    hashed_here.clear()

    db = tmp_path / "runs.db"
    first = executor(db, backend)
    report = await first.run("frames", inputs={"rows": BIG_ROWS})
    first.close()
    assert report.success, report.error
    assert hashed_here == []  # neither when storing make's result nor when fingerprinting total's input
    frame = report.cache.get("make", "result")
    results = ResultStore(db)
    try:
        stored = results.results("frames")
    finally:
        results.close()
    assert stored["make"][0].outputs["result"] == real(frame)  # the worker's fingerprint is the value's own

    again = executor(db, backend)
    reused = await again.run("frames", inputs={"rows": BIG_ROWS})
    again.close()
    assert {n: o.status for n, o in reused.outcomes.items()} == {"make": "cached", "total": "cached"}
    assert reused.cache.get("total", "result") == BIG_ROWS * (BIG_ROWS - 1) // 2
    assert hashed_here == []


def make_unhashable(rows: int) -> Any:
    return [lambda: None] * rows  # a big list that neither hashes nor pickles with pickle itself


def count(frame: Any) -> int:
    return len(frame)


async def test_a_big_output_the_worker_cannot_fingerprint_is_not_stored_and_runs_again(
    tmp_path: Path, backend: DaskBackend
) -> None:
    db = tmp_path / "runs.db"
    for _ in range(2):
        runs = executor(db, backend, make=make_unhashable, total=count)
        report = await runs.run("frames", inputs={"rows": 20_000})
        runs.close()
        assert report.success, report.error
        assert report.cache.get("total", "result") == 20_000
        assert report.outcomes["make"].status == "succeeded"  # each time: nothing was stored
        assert any("an output could not be fingerprinted" in note for note in report.outcomes["make"].notes)
