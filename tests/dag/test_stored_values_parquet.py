"""Stored results of incremental runs: big DataFrames as Parquet files when pyarrow is installed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.dag.results import ResultStore, StoredResult
from tests.dag.helpers import workflow

pytest.importorskip("pyarrow")

pytestmark = pytest.mark.anyio

ROWS = 50_000  # three columns of 8 bytes: over the inline limit, so a file beside the database


def frame(seed: int) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    return pd.DataFrame({
        "x": generator.normal(size=ROWS),
        "n": np.arange(ROWS, dtype="int64"),
        "city": pd.Categorical(generator.choice(["Oslo", "Lima", "Pune"], size=ROWS)),
    }, index=pd.RangeIndex(ROWS, name="row"))


def result(node: str) -> StoredResult:
    return StoredResult("flow", node, f"print-{node}", "code", "settings", {}, {"result": "out"}, "run-1")


def value_formats(db: Path) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT node, format FROM dag_result_values").fetchall())


def test_a_big_dataframe_is_stored_as_parquet_and_read_back_equal(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = ResultStore(db)
    original = frame(1)
    store.save(result("make"), {"result": original})
    store.close()
    assert value_formats(db) == {"make": "parquet"}
    (file,) = os.listdir(f"{db}-values")
    assert file.endswith(".parquet") and Path(f"{db}-values", file).read_bytes()[:4] == b"PAR1"
    again = ResultStore(db)
    try:
        loaded = again.load_values(again.results("flow")["make"][0])["result"]
    finally:
        again.close()
    pd.testing.assert_frame_equal(loaded, original)  # values, dtypes (the categorical too), index and its name


def test_a_dataframe_parquet_cannot_hold_is_pickled(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    mixed = frame(2).assign(cell=[{"a": i} if i % 2 else [i] for i in range(ROWS)])  # lists and dicts mixed
    store = ResultStore(db)
    try:
        store.save(result("mixed"), {"result": mixed})
        assert value_formats(db) == {"mixed": "pickle"}
        loaded = store.load_values(store.results("flow")["mixed"][0])["result"]
    finally:
        store.close()
    pd.testing.assert_frame_equal(loaded, mixed)


def make(seed: int) -> pd.DataFrame:
    return frame(seed)


def mean(data: pd.DataFrame) -> float:
    return float(data["x"].mean())


async def test_an_incremental_run_reuses_a_frame_stored_as_parquet(tmp_path: Path) -> None:
    spec = workflow(
        "frames",
        {"id": "make", "action": "make", "inputs": [{"name": "seed", "reference": "inputs.seed"}]},
        {"id": "mean", "action": "mean", "inputs": [{"name": "data", "reference": "make.result"}]},
    )
    db = tmp_path / "runs.db"

    def executor() -> DagExecutor:
        registry = ActionRegistry()
        registry.register("make", make)
        registry.register("mean", mean)
        made = DagExecutor(registry, db=db, incremental=True)
        made.add_workflow(spec)
        return made

    first = executor()
    report = await first.run("frames", inputs={"seed": 3})
    first.close()
    assert report.success, report.error
    assert value_formats(db)["make"] == "parquet"
    again = executor()
    reused = await again.run("frames", inputs={"seed": 3})
    again.close()
    assert {n: o.status for n, o in reused.outcomes.items()} == {"make": "cached", "mean": "cached"}
    stored: Any = reused.cache.get("make", "result")
    pd.testing.assert_frame_equal(stored, report.cache.get("make", "result"))
