"""Runs recorded in SQLite: listing, DOT and resume from another process."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import anyio
import pandas as pd
import pytest

from dagger_nb import ActionRegistry, DagExecutor, NodeContext
from dagger_nb.dag import store
from dagger_nb.errors import DaggerWarning, DatabaseInUse, StorageError
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
        report = executor.run_sync("nightly", inputs={"factor": 10})
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
        runs = executor.runs_frame()
        assert list(runs["status"]) == ["paused"], runs
        assert 'fillcolor="#f28b82"' in executor.to_dot({run_id!r})
        report = executor.resume_sync({run_id!r})
        print(report.status, report.cache.get("publish", "result"))
    """,
            score_body='return int(frame["x"].sum()) * factor',
        )
    )
    assert output == "succeeded published 60"

    executor = DagExecutor(db=db)
    runs = executor.runs_frame()
    assert list(runs["run_id"]) == [run_id] and list(runs["status"]) == ["succeeded"]
    assert 'fillcolor="#f28b82"' not in executor.to_dot(run_id)
    assert executor.to_dot("nightly") == executor.to_dot(run_id)


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
    report = await executor.run("recorded", inputs={"who": "me"})
    executor.close()

    fresh = DagExecutor(ActionRegistry(), db=tmp_path / "runs.db")
    row = fresh.runs_frame().iloc[0]
    assert (row["run_id"], row["status"], row["nodes"], row["failed"]) == (report.run_id, "failed", 2, 1)
    stored = fresh._store.load_run(report.run_id, config_for=lambda spec: spec.config)  # type: ignore[union-attr]
    assert stored.outcomes["b"].error == report.outcomes["b"].error
    assert stored.cache.get("inputs", "who") == "me"
    pd.testing.assert_frame_equal(stored.cache.get("f", "result"), pd.DataFrame({"a": [1]}))


async def test_where_each_node_ran_is_stored(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("one", lambda: 1)
    executor = executor_with(registry, workflow("placed", {"id": "n", "action": "one"}), db=tmp_path / "runs.db")
    report = await executor.run("placed")
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
    report = await executor.run("needs-fix")
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
    report = await executor.run("locks")
    assert report.success
    stored = executor._store.load_run(report.run_id, config_for=lambda spec: spec.config)  # type: ignore[union-attr]
    assert not stored.cache.contains("l", "result")


async def test_async_with_closes_the_database(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("one", lambda: 1)
    async with executor_with(registry, workflow("w", {"id": "n", "action": "one"}), db=tmp_path / "r.db") as ex:
        await ex.run("w")
    import sqlite3

    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        ex._store._connection.execute("SELECT 1")  # type: ignore[union-attr]


# -- durability: per-node commits, interrupted runs, locks ----------------------------------------

KILLABLE = """
import os, sys, time
import dagger_nb

registry = dagger_nb.ActionRegistry()
marker = sys.argv[2]

def first():
    with open(marker + ".first", "a") as log:
        log.write("ran\\n")
    return 41

def second(value):
    open(marker, "w").close()
    time.sleep(3600)

registry.register("first", first)
registry.register("second", second)
executor = dagger_nb.DagExecutor(registry, db=sys.argv[1])
executor.load_yaml('''
name: killed
nodes:
  - {id: a, action: first}
  - {id: b, action: second, inputs: [{name: value, reference: a.result}]}
''')
executor.run_sync("killed")
"""


def _start_killable(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    db, marker = tmp_path / "runs.db", tmp_path / "waiting"
    child = subprocess.Popen([sys.executable, "-c", KILLABLE, str(db), str(marker)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the child did not reach node b"
        time.sleep(0.01)
    return child, db, marker


def test_a_killed_run_reads_interrupted_and_resumes_only_unfinished_nodes(tmp_path: Path) -> None:
    child, db, _ = _start_killable(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait()

    registry = ActionRegistry()
    registry.register("first", lambda: 1 / 0)  # must not run again: its result is in the file
    registry.register("second", lambda value: value + 1)
    executor = DagExecutor(registry, db=db)
    runs = executor.runs_frame()
    assert runs["status"].tolist() == ["interrupted"]
    assert 'fillcolor="#' in executor.to_dot(runs["run_id"][0])
    report = executor.resume_sync(runs["run_id"][0])
    assert report.status == "succeeded" and report.cache.get("b", "result") == 42
    assert (tmp_path / "waiting.first").read_text() == "ran\n"
    assert executor.runs_frame()["status"].tolist() == ["succeeded"]
    executor.close()


def test_a_run_of_a_live_process_cannot_be_opened_elsewhere(tmp_path: Path) -> None:
    child, db, _ = _start_killable(tmp_path)
    try:
        with pytest.raises(DatabaseInUse, match=rf"PID {child.pid}.*cannot be resumed") as refused:
            DagExecutor(db=db)
        assert refused.value.pid == child.pid
    finally:
        child.kill()
        child.wait()


async def test_each_node_is_in_the_file_as_soon_as_it_finishes(tmp_path: Path) -> None:
    registry = ActionRegistry()
    release = anyio.Event()

    async def wait() -> str:
        await release.wait()
        return "late"

    def early(ctx: NodeContext) -> dict[str, int]:
        ctx.output("written", 5)  # what an action writes itself is committed with it
        return {"rows": 3}

    registry.register("early", early)
    registry.register("wait", wait)
    spec = workflow("steps", {"id": "e", "action": "early"}, {"id": "w", "action": "wait", "dependencies": ["e"]})
    executor = executor_with(registry, spec, db=tmp_path / "runs.db")
    handle = executor.start("steps")

    def stored() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        with closing(sqlite3.connect(tmp_path / "runs.db")) as connection:
            nodes = connection.execute("SELECT node, status FROM dag_nodes ORDER BY position").fetchall()
            values = connection.execute("SELECT namespace, key FROM dag_cache WHERE namespace != 'inputs' "
                                        "ORDER BY key").fetchall()
        return nodes, values

    with anyio.fail_after(10):
        while handle.snapshot().outcomes["w"].status != "running":
            await anyio.sleep(0.005)
    assert stored() == ([("e", "succeeded"), ("w", "pending")], [("e", "result"), ("e", "rows"), ("e", "written")])
    release.set()
    await handle
    assert stored()[0] == [("e", "succeeded"), ("w", "succeeded")]
    executor.close()


async def test_re_running_the_cell_that_opens_the_store_takes_it_over(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("forever", anyio.sleep_forever)
    spec = workflow("long", {"id": "f", "action": "forever"})
    first = executor_with(registry, spec, db=tmp_path / "runs.db")
    handle = first.start("long")
    with anyio.fail_after(10):
        while handle.snapshot().outcomes["f"].status != "running":
            await anyio.sleep(0.005)

    with pytest.warns(DaggerWarning, match="DagExecutor took over"):
        second = executor_with(registry, spec, db=tmp_path / "runs.db")
    with anyio.fail_after(10):
        report = await handle
    assert report.status == "cancelled"
    assert any("took its run store over" in note for note in report.notes)
    assert second.runs_frame()["status"].tolist() == ["interrupted"]  # the earlier one could not record its end
    with pytest.raises(StorageError, match="closed: a later DagExecutor of this process took the file over"):
        first._store.run_rows()  # type: ignore[union-attr]
    second.close()


# -- damaged and foreign files ----------------------------------------------------------------------


def _recorded(tmp_path: Path) -> tuple[Path, str]:
    registry = ActionRegistry()
    registry.register("frame", lambda: pd.DataFrame({"a": [1]}))
    registry.register("two", lambda: 2)
    spec = workflow("kept", {"id": "f", "action": "frame"}, {"id": "t", "action": "two"})
    executor = executor_with(registry, spec, db=tmp_path / "runs.db")
    report = executor.run_sync("kept")
    executor.close()
    return tmp_path / "runs.db", report.run_id


MISSING_CLASS_PICKLE = b"cnowhere\nGone\n(tR.".hex()  # protocol 0: call nowhere.Gone()
DAMAGE = {
    "node status": "UPDATE dag_nodes SET status = 'exploded' WHERE node = 't'",
    "retry messages": "UPDATE dag_nodes SET retry_messages = '[1, 2' WHERE node = 't'",
    "notes type": "UPDATE dag_nodes SET notes = '{\"a\": 1}' WHERE node = 't'",
    "attempts type": "UPDATE dag_nodes SET attempts = 'many' WHERE node = 't'",
    "garbage pickle": "UPDATE dag_cache SET value = X'80049500' WHERE namespace = 'f'",
    "pickle of a missing class": f"UPDATE dag_cache SET value = X'{MISSING_CLASS_PICKLE}' WHERE namespace = 'f'",
    "json value": "UPDATE dag_cache SET value = '{oops' WHERE namespace = 't'",
    "value format": "UPDATE dag_cache SET format = 'yaml' WHERE namespace = 't'",
    "workflow json": "UPDATE dag_runs SET spec = '{\"name\": 3}'",
    "foreign node row": "UPDATE dag_nodes SET node = 'stranger' WHERE node = 't'",
    "run status": "UPDATE dag_runs SET status = 'weird'",
    "run start time": "UPDATE dag_runs SET started_at = 'yesterday'",
    "node end time": "UPDATE dag_nodes SET finished_at = X'00' WHERE node = 't'",
    "foreign schema": "ALTER TABLE dag_nodes RENAME COLUMN error TO problem",
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_every_read_of_a_damaged_file_is_a_storage_error_naming_file_and_run(tmp_path: Path, damage: str) -> None:
    db, run_id = _recorded(tmp_path)
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(damage)

    executor = DagExecutor(ActionRegistry(), db=db)
    with pytest.raises(StorageError) as raised:
        executor.runs_frame()
        executor.resume_sync(run_id)
    assert str(db) in str(raised.value) and run_id in str(raised.value), raised.value
    executor.close()


@pytest.mark.parametrize(
    "content", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000], ids=["text", "torn"]
)
def test_a_file_that_is_not_a_run_store_is_refused_naming_it(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "runs.db"
    db.write_bytes(content)
    with pytest.raises(StorageError, match=str(db)):
        DagExecutor(db=db)


def test_a_foreign_table_of_the_same_name_is_refused_naming_the_file(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("CREATE TABLE dag_runs (id INTEGER PRIMARY KEY, payload BLOB)")
        connection.execute("INSERT INTO dag_runs VALUES (1, x'00')")
    executor = DagExecutor(db=db)
    with pytest.raises(StorageError, match=str(db)):
        executor.runs_frame()
    executor.close()


async def test_a_run_taken_over_before_it_was_recorded_ends_cancelled(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("one", lambda: 1)
    spec = workflow("w", {"id": "n", "action": "one"})
    first = executor_with(registry, spec, db=tmp_path / "runs.db")
    handle = first.start("w")  # not started yet: the take-over comes before its first write
    with pytest.warns(DaggerWarning, match="took over"):
        second = executor_with(registry, spec, db=tmp_path / "runs.db")
    with anyio.fail_after(10):
        report = await handle
    assert report.status == "cancelled" and report.counts() == {"pending": 1}
    second.close()


async def test_nodes_finishing_together_share_one_transaction(tmp_path: Path) -> None:
    registry = ActionRegistry()
    release = anyio.Event()

    async def wait(index: int) -> int:
        await release.wait()
        return index

    registry.register("wait", wait)
    nodes = [{"id": f"n{index}", "action": "wait", "inputs": [{"name": "index", "value": index}]}
             for index in range(50)]
    executor = executor_with(registry, workflow("fan", *nodes, max_parallel_nodes=50), db=tmp_path / "runs.db")
    assert executor._store is not None
    transactions: list[int] = []
    commit_nodes = executor._store.commit_nodes

    def counted(run_id: str, records: list[object], **kwargs: object) -> None:
        transactions.append(len(records))
        commit_nodes(run_id, records, **kwargs)  # type: ignore[arg-type]

    executor._store.commit_nodes = counted  # type: ignore[method-assign]
    handle = executor.start("fan")
    with anyio.fail_after(10):
        while sum(o.status == "running" for o in handle.snapshot().outcomes.values()) < 50:
            await anyio.sleep(0.005)
    release.set()
    report = await handle
    assert report.success and sum(transactions) == 50
    assert len(transactions) <= 3, transactions
    executor.close()
