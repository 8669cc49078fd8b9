"""Runs recorded in SQLite: listing, DOT and resume from another process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.dag import store
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio

WORKFLOW = """
name: nightly
config: {on_failure: pause}
nodes:
  - id: load
    action: load
    outputs: [{name: frame}]
  - id: score
    action: score
    onfailure: false
    inputs: [{name: frame, reference: load.frame}, {name: factor, reference: inputs.factor}]
  - id: publish
    action: publish
    inputs: [{name: value, reference: score.result}]
"""

ACTIONS = """
import pandas as pd
import dagger_nb

@dagger_nb.action
def load():
    return pd.DataFrame({{"x": [1, 2, 3]}})

@dagger_nb.action
def score(frame, factor):
    {score_body}

@dagger_nb.action
def publish(value):
    return f"published {{value}}"
"""


def _script(db: Path, body: str, score_body: str) -> str:
    return (
        textwrap.dedent(ACTIONS.format(score_body=score_body))
        + textwrap.dedent(
            f"""
        executor = dagger_nb.DagExecutor(db={str(db)!r})
        executor.load_yaml({WORKFLOW!r})
        """
        )
        + textwrap.dedent(body)
    )


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_paused_run_is_resumed_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id = _python(
        _script(
            db,
            """
        report = executor.run("nightly", inputs={"factor": 10})
        assert report.status == "paused", report
        print(report.run_id)
    """,
            score_body='raise RuntimeError("model not trained")',
        )
    )

    output = _python(
        _script(
            db,
            f"""
        runs = executor.runs()
        assert list(runs["status"]) == ["paused"], runs
        assert 'fillcolor="#f28b82"' in executor.serialize_tree_to_dot({run_id!r})
        report = executor.resume_sync({run_id!r})
        print(report.status, report.cache.get("publish", "result"))
    """,
            score_body='return int(frame["x"].sum()) * factor',
        )
    )
    assert output == "succeeded published 60"

    executor = DagExecutor(db=db)
    runs = executor.runs()
    assert list(runs["run_id"]) == [run_id] and list(runs["status"]) == ["succeeded"]
    assert 'fillcolor="#f28b82"' not in executor.serialize_tree_to_dot(run_id)
    assert executor.serialize_tree_to_dot("nightly") == executor.serialize_tree_to_dot(run_id)


async def test_every_run_is_recorded_with_outcomes_and_cache(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("frame", lambda: pd.DataFrame({"a": [1]}))
    registry.register("broken", lambda: 1 / 0)
    spec = workflow(
        "recorded",
        {"id": "f", "action": "frame"},
        {"id": "b", "action": "broken", "onfailure": False},
        on_failure="continue",
    )
    executor = executor_with(registry, spec, db=tmp_path / "runs.db")
    report = await executor.execute_dag("recorded", inputs={"who": "me"})
    executor.close()

    fresh = DagExecutor(ActionRegistry(), db=tmp_path / "runs.db")
    row = fresh.runs().iloc[0]
    assert (row["run_id"], row["status"], row["nodes"], row["failed"]) == (report.run_id, "failed", 2, 1)
    stored = fresh._store.load_run(report.run_id, config_for=lambda spec: spec.config)  # type: ignore[union-attr]
    assert stored.outcomes["b"].error == report.outcomes["b"].error
    assert stored.cache.get("inputs", "who") == "me"
    pd.testing.assert_frame_equal(stored.cache.get("f", "result"), pd.DataFrame({"a": [1]}))


async def test_where_each_node_ran_is_stored(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("one", lambda: 1)
    executor = executor_with(registry, workflow("placed", {"id": "n", "action": "one"}), db=tmp_path / "runs.db")
    report = await executor.execute_dag("placed")
    report.outcomes["n"].worker = "tcp://10.0.0.7:40123"  # as a Dask backend records it
    executor._store.save_run(report)  # type: ignore[union-attr]
    executor.close()

    stored = DagExecutor(db=tmp_path / "runs.db")._store.load_run(  # type: ignore[union-attr]
        report.run_id, config_for=lambda spec: spec.config
    )
    assert stored is not None and stored.outcomes["n"].worker == "tcp://10.0.0.7:40123"


def test_a_runs_file_from_before_the_worker_column_still_opens(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as connection:
        connection.executescript(store.SCHEMA.replace("    worker TEXT, PRIMARY KEY", "    PRIMARY KEY"))
        connection.execute("INSERT INTO dag_runs VALUES ('r1', 'w', 'succeeded', NULL, 1.0, 2.0, ?, 'digraph {}')",
                           (workflow("w", {"id": "n", "action": "one"}).model_dump_json(),))
        connection.execute("INSERT INTO dag_nodes VALUES ('r1', 'n', 'one', 'succeeded', 1, '[]', NULL, 1.0, 2.0, "
                           "'[]', 0)")
    connection.close()
    stored = store.RunStore(db).load_run("r1", config_for=lambda spec: spec.config)
    assert stored is not None and stored.outcomes["n"].status == "succeeded" and stored.outcomes["n"].worker is None


async def test_resume_needs_the_actions_registered_again(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("fail", lambda: 1 / 0)
    spec = workflow("needs-fix", {"id": "n", "action": "fail", "onfailure": False})
    executor = executor_with(registry, spec, db=tmp_path / "runs.db")
    report = await executor.execute_dag("needs-fix")
    executor.close()

    fresh = DagExecutor(ActionRegistry(), db=tmp_path / "runs.db")
    resumed = await fresh.resume(report.run_id)
    assert resumed.status == "paused"
    assert (
        resumed.outcomes["n"].error == "Failed after 1 attempt. Last error: unknown action 'fail' (registered: none)"
    )


async def test_values_that_cannot_be_stored_are_left_out(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("lock", lambda: __import__("threading").Lock())
    executor = executor_with(registry, workflow("locks", {"id": "l", "action": "lock"}), db=tmp_path / "r.db")
    report = await executor.execute_dag("locks")
    assert report.success
    stored = executor._store.load_run(report.run_id, config_for=lambda spec: spec.config)  # type: ignore[union-attr]
    assert not stored.cache.contains("l", "result")


async def test_async_with_closes_the_database(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("one", lambda: 1)
    async with executor_with(registry, workflow("w", {"id": "n", "action": "one"}), db=tmp_path / "r.db") as ex:
        await ex.execute_dag("w")
    import sqlite3

    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        ex._store._connection.execute("SELECT 1")  # type: ignore[union-attr]
