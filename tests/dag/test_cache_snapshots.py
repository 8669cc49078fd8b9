"""``config.cache_snapshot_interval``: what running actions write through ``ctx`` is stored at that
interval, so a crash loses at most that much of it."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from dagger_nb import ActionRegistry, DagExecutor, NodeContext
from tests.dag.helpers import workflow

pytestmark = pytest.mark.anyio


def _stored(db: Path, namespace: str, key: str) -> Any:
    if not db.exists():
        return None
    with closing(sqlite3.connect(db, timeout=10)) as connection:
        try:
            row = connection.execute("SELECT format, value FROM dag_cache WHERE namespace = ? AND key = ?",
                                     (namespace, key)).fetchone()
        except sqlite3.OperationalError:  # the tables are not there yet
            return None
    return None if row is None or row[0] != "json" else json.loads(row[1])


def _node_status(db: Path, node: str) -> str | None:
    with closing(sqlite3.connect(db, timeout=10)) as connection:
        row = connection.execute("SELECT status FROM dag_nodes WHERE node = ?", (node,)).fetchone()
    return None if row is None else row[0]


async def _until(condition: Any) -> None:
    with anyio.fail_after(20):
        while not condition():
            await anyio.sleep(0.005)


async def test_what_a_running_action_writes_is_stored_at_the_snapshot_interval(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    first_stored, finish = anyio.Event(), anyio.Event()

    async def long(ctx: NodeContext) -> str:
        ctx.output("step", 1)
        await first_stored.wait()
        ctx.output("step", 2)
        await finish.wait()
        return "done"

    registry = ActionRegistry()
    registry.register("long", long)
    runs = DagExecutor(registry, db=db)
    runs.add_workflow(workflow("snap", {"id": "long", "action": "long"}, cache_snapshot_interval=0.02))
    handle = runs.start("snap")
    await _until(lambda: _stored(db, "long", "step") == 1)
    first_stored.set()
    await _until(lambda: _stored(db, "long", "step") == 2)
    assert _node_status(db, "long") != "succeeded"  # stored while it runs, before its node commit
    finish.set()
    report = await handle
    assert report.status == "succeeded" and _stored(db, "long", "result") == "done"
    runs.close()


async def test_snapshots_wait_for_the_interval(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    finish = anyio.Event()

    async def long(ctx: NodeContext) -> str:
        ctx.output("step", 1)
        await finish.wait()
        return "done"

    registry = ActionRegistry()
    registry.register("long", long)
    runs = DagExecutor(registry, db=db)
    runs.add_workflow(workflow("snap", {"id": "long", "action": "long"}, cache_snapshot_interval=3600))
    handle = runs.start("snap")
    await _until(lambda: handle.snapshot().outcomes["long"].status == "running")
    await anyio.sleep(0.2)  # several times what a snapshot takes: none is due for an hour
    assert _stored(db, "long", "step") is None
    finish.set()
    await handle
    assert _stored(db, "long", "step") == 1
    runs.close()


COUNTER = """
import sys, time
import dagger_nb

def count(ctx):
    step = ctx.cache.get(ctx.node, "step", 0)
    while True:
        step += 1
        ctx.output("step", step)
        time.sleep(0.002)

registry = dagger_nb.ActionRegistry()
registry.register("count", count)
executor = dagger_nb.DagExecutor(registry, db=sys.argv[1])
executor.load_yaml('''
name: counting
config: {cache_snapshot_interval: 0.05}
nodes:
  - {id: counter, action: count}
''')
executor.run_sync("counting")
"""


def test_a_killed_run_keeps_the_last_snapshot_of_what_its_actions_wrote(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    child = subprocess.Popen([sys.executable, "-c", COUNTER, str(db)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (_stored(db, "counter", "step") or 0) < 20:
            assert child.poll() is None and time.monotonic() < deadline, "the child stored no snapshot"
            time.sleep(0.01)
        seen = _stored(db, "counter", "step")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    def resume_counting(ctx: NodeContext) -> int:
        return int(ctx.cache.get(ctx.node, "step", 0))

    registry = ActionRegistry()
    registry.register("count", resume_counting)
    runs = DagExecutor(registry, db=db)
    run_id = runs.runs_frame()["run_id"][0]
    report = runs.resume_sync(run_id)
    assert report.status == "succeeded"
    assert report.cache.get("counter", "result") >= seen  # no write before the last snapshot is lost
    assert report.cache.get("counter", "result") == _stored(db, "counter", "step")
    runs.close()
