"""Incremental runs at their edges: state that changes in place, a closed or taken-over
executor, a result store that cannot be opened, a result write that fails."""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.dag.results import ResultStore, StoredResult
from dagger_nb.errors import StorageError
from tests.dag.helpers import workflow

pytestmark = pytest.mark.anyio

SCALED = workflow("scaled", {"id": "a", "action": "a", "inputs": [{"name": "x", "reference": "inputs.x"}]})
ONE = workflow("one", {"id": "a", "action": "a"})


class Scale:
    def __init__(self) -> None:
        self.factor = 2

    def __call__(self, x: int) -> int:
        return x * self.factor


def closing_over(box: dict[str, int]) -> Any:
    def a(x: int) -> int:
        return x * box["factor"]
    return a


def one() -> int:
    return 1


def executor_of(fn: Any, db: Path, spec: Any) -> DagExecutor:
    registry = ActionRegistry()
    registry.register("a", fn)
    runs = DagExecutor(registry, db=db, incremental=True)
    runs.add_workflow(spec)
    return runs


async def test_changing_a_callable_objects_attribute_reruns_it_in_the_same_kernel(tmp_path: Path) -> None:
    scale = Scale()
    runs = executor_of(scale, tmp_path / "runs.db", SCALED)
    try:
        assert (await runs.run("scaled", inputs={"x": 3})).cache.get("a", "result") == 6
        scale.factor = 5
        second = await runs.run("scaled", inputs={"x": 3})
        assert second.outcomes["a"].status == "succeeded" and second.outcomes["a"].reason == "code changed"
        assert second.cache.get("a", "result") == 15
        third = await runs.run("scaled", inputs={"x": 3})  # unchanged again: reused
        assert third.outcomes["a"].status == "cached" and third.cache.get("a", "result") == 15
    finally:
        runs.close()


async def test_mutating_a_dict_an_action_closes_over_reruns_it_in_the_same_kernel(tmp_path: Path) -> None:
    box = {"factor": 2}
    runs = executor_of(closing_over(box), tmp_path / "runs.db", SCALED)
    try:
        assert (await runs.run("scaled", inputs={"x": 3})).cache.get("a", "result") == 6
        box["factor"] = 5
        second = await runs.run("scaled", inputs={"x": 3})
        assert second.outcomes["a"].status == "succeeded" and second.cache.get("a", "result") == 15
    finally:
        runs.close()


async def test_a_taken_over_executor_cannot_clear_the_new_owners_results(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    old = executor_of(one, db, ONE)
    await old.run("one")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the take-over's DaggerWarning is tested with the lock
        new = executor_of(one, db, ONE)
    try:
        with pytest.raises(StorageError, match=r"closed: a later DagExecutor .* took the file over") as raised:
            old.clear_cache()
        assert str(db) in str(raised.value)
        with pytest.raises(StorageError, match="closed"):
            old.invalidate("one", "a")
        assert (await new.run("one")).outcomes["a"].status == "cached"
    finally:
        new.close()
        old.close()


async def test_a_closed_executor_does_not_reopen_its_results_without_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runs = executor_of(one, db, ONE)
    await runs.run("one")
    runs.close()
    with pytest.raises(StorageError, match=f"'{db}'.*closed"):
        runs.clear_cache()
    again = executor_of(one, db, ONE)
    try:
        assert (await again.run("one")).outcomes["a"].status == "cached"
    finally:
        again.close()


async def test_a_result_store_that_cannot_be_opened_leaves_a_note_and_every_node_runs(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with sqlite3.connect(db) as damaged:  # a results table of another shape: its store cannot open
        damaged.execute("CREATE TABLE dag_result_values (other TEXT)")
    damaged.close()
    os.mkdir(f"{db}-values")
    runs = executor_of(one, db, ONE)
    try:
        report = await runs.run("one")
        assert report.status == "succeeded" and report.outcomes["a"].status == "succeeded"
        assert any(note.startswith("incremental mode: stored results could not be opened, every node runs")
                   and str(db) in note for note in report.notes)
    finally:
        runs.close()


def test_a_failed_write_keeps_the_value_file_a_stored_row_refers_to(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    store = ResultStore(db, inline_limit=1024)
    big = np.arange(10_000)

    def result() -> StoredResult:
        return StoredResult("w", "n", "fp", "code", "settings", {}, {"result": "out"}, "run1")

    try:
        first = result()
        store.save(first, {"result": big})
        with sqlite3.connect(db) as other:  # the database refuses the next row (as a full disk would)
            other.execute("CREATE TRIGGER refuse BEFORE INSERT ON dag_results BEGIN SELECT RAISE(ABORT, 'full'); END")
        other.close()
        with pytest.raises(StorageError, match="full"):
            store.save(result(), {"result": big + 1})
        stored = store.results("w")["n"][0]
        np.testing.assert_array_equal(store.load_values(stored)["result"], big)
        assert os.listdir(f"{db}-values") == [first.values["result"][2]]
    finally:
        store.close()
