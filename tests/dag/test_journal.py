"""What the run store is given to write: text it cannot take, failures of any kind, a step's additions."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import pytest

import dagger_nb
from dagger_nb import ActionRegistry, DagExecutor, NodeContext
from dagger_nb.dag import store
from dagger_nb.errors import describe_error
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio

UNDECODABLE = os.fsdecode(b"\xff")  # a lone surrogate, as an undecodable file name reads


def test_an_error_with_a_lone_surrogate_is_described_printably() -> None:
    text = describe_error(ValueError("bad " + UNDECODABLE))
    assert text == "ValueError: bad \\udcff"
    text.encode("utf-8")  # storable and printable as it is


async def test_an_error_with_a_lone_surrogate_is_recorded(tmp_path: Path) -> None:
    registry = ActionRegistry()

    def bad() -> None:
        raise ValueError("cannot read " + UNDECODABLE)

    registry.register("bad", bad)
    registry.register("after", lambda: 1)
    db = tmp_path / "runs.db"
    executor = executor_with(registry, workflow("sur", {"id": "a", "action": "bad"}, {"id": "b", "action": "after"},
                                               on_failure="continue", max_attempts=1), db=db)

    report = await executor.run("sur")

    assert report.status == "failed"
    assert report.outcomes["a"].error is not None and "cannot read \\udcff" in report.outcomes["a"].error
    assert report.outcomes["b"].status == "succeeded"
    executor.close()
    reopened = DagExecutor(registry, db=db)
    assert reopened.runs_frame()["status"].tolist() == ["failed"]
    reopened.close()


async def test_a_value_the_store_cannot_take_ends_the_run_failed_naming_file_and_run(tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("keys", lambda: {"k" + UNDECODABLE: 1})
    registry.register("after", lambda result: 2)
    db = tmp_path / "runs.db"
    executor = executor_with(registry, workflow(
        "keys", {"id": "a", "action": "keys"},
        {"id": "b", "action": "after", "inputs": [{"name": "result", "reference": "a.result"}]}), db=db)

    report = await executor.run("keys")

    assert report.status == "failed"
    assert report.error is not None and str(db) in report.error and report.run_id in report.error
    assert "cannot be stored" in report.error
    assert report.outcomes["b"].status != "succeeded"  # 'a' was never recorded: nothing built on it
    executor.close()
    reopened = DagExecutor(registry, db=db)
    assert reopened.runs_frame()["status"].tolist() == ["failed"]  # not left "running"
    reopened.close()


async def test_any_failure_to_write_fails_the_run_and_releases_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ActionRegistry()
    ran: list[str] = []
    registry.register("first", lambda: ran.append("first") or 1)
    registry.register("second", lambda: ran.append("second") or 2)

    def broken(self: store.RunStore, run_id: str, records: list[store.NodeRecord], **_: object) -> None:
        raise RuntimeError("the driver fell over")

    monkeypatch.setattr(store.RunStore, "commit_nodes", broken)
    db = tmp_path / "runs.db"
    executor = executor_with(registry, workflow(
        "broken", {"id": "a", "action": "first"}, {"id": "b", "action": "second", "dependencies": ["a"]}), db=db)

    report = await executor.run("broken")

    assert report.status == "failed"
    assert report.error is not None and str(db) in report.error and "RuntimeError: the driver fell over" in report.error
    assert ran == ["first"]  # 'a' was not recorded, so 'b' never started
    executor.close()


def stored_statuses(db: Path, run_id: str, *nodes: str) -> list[str | None]:
    """The statuses of ``nodes`` as committed to the run store's file."""
    with closing(sqlite3.connect(db)) as connection:
        found = dict(connection.execute("SELECT node, status FROM dag_nodes WHERE run_id = ?", (run_id,)).fetchall())
    return [found.get(node) for node in nodes]


async def test_a_step_killed_while_its_tools_are_done_leaves_none_of_them_stored(tmp_path: Path) -> None:
    registry = ActionRegistry()
    thinking = anyio.Event()
    release = anyio.Event()
    executions: list[str] = []

    @dagger_nb.action(registry=registry)
    async def plan(ctx: NodeContext) -> str:
        executions.append("plan")
        ctx.add_node("tool", id="tool_a")
        ctx.add_node("tool", id="tool_b")
        thinking.set()
        await release.wait()
        return "planned"

    @dagger_nb.action(registry=registry)
    def tool(ctx: NodeContext) -> str:
        executions.append(ctx.node)
        return ctx.node

    @dagger_nb.action(registry=registry)
    def hooked() -> str:
        return "hooked"

    db = tmp_path / "runs.db"
    executor = executor_with(registry, workflow("grow", {"id": "plan", "action": "plan"}, {"id": "other",
                                                "action": "hooked"}), db=db)
    handle = executor.start("grow")
    with anyio.fail_after(10):
        await thinking.wait()
        while any(handle.snapshot().outcomes[node].status != "succeeded" for node in ("tool_a", "tool_b", "other")):
            await anyio.sleep(0.005)
    handle.add_node("hooked", id="from_a_hook")  # not a step's addition: stored at once
    with anyio.fail_after(10):
        # The outcome reads "succeeded" before its commit (written off the loop) is in the file:
        # wait for the file itself, which is what a kill would leave.
        while stored_statuses(db, handle.run_id, "other", "from_a_hook") != ["succeeded", "succeeded"]:
            await anyio.sleep(0.005)
    crashed = tmp_path / "crashed.db"  # what a SIGKILL now would leave
    with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(crashed)) as copy:
        source.backup(copy)
    release.set()
    assert (await handle).status == "succeeded"
    executor.close()

    restarted = DagExecutor(registry, db=crashed)
    registry.register("hooked", lambda: pytest.fail("a finished node that no step added ran again"))
    executions.clear()
    release.set()
    resumed = await restarted.resume(handle.run_id)
    assert resumed.status == "succeeded"
    assert sorted(resumed.outcomes) == ["from_a_hook", "other", "plan", "tool_a", "tool_b"]  # no orphan, no twin
    assert sorted(executions) == ["plan", "tool_a", "tool_b"]  # the step and its additions, once each
    restarted.close()


@pytest.mark.parametrize("how", ["failed, resumed by a new executor", "cancelled, resumed in place"])
async def test_a_step_that_runs_again_adds_its_nodes_again_from_a_clean_slate(tmp_path: Path, how: str) -> None:
    registry = ActionRegistry()
    executions: list[str] = []
    behaviour = {"fail": how.startswith("failed"), "block": how.startswith("cancelled")}
    blocked = anyio.Event()

    @dagger_nb.action(registry=registry)
    async def plan(ctx: NodeContext) -> str:
        executions.append("plan")
        ctx.add_node("tool", id="search")  # an explicit id: added twice, it would be a duplicate
        ctx.add_node("tool", dependencies=["search"])
        if behaviour["block"]:
            blocked.set()
            await anyio.sleep_forever()
        if behaviour["fail"]:
            raise RuntimeError("the model was down")
        return "planned"

    @dagger_nb.action(registry=registry)
    def tool(ctx: NodeContext) -> str:
        executions.append(ctx.node)
        return ctx.node

    db = tmp_path / "runs.db"
    executor = executor_with(registry, workflow("grow", {"id": "plan", "action": "plan"}, max_attempts=1,
                                                on_failure="pause"), db=db)
    if behaviour["block"]:
        handle = executor.start("grow")
        with anyio.fail_after(10):
            await blocked.wait()
            while handle.snapshot().outcomes["tool_1"].status != "succeeded":
                await anyio.sleep(0.005)
        handle.cancel()
        first = await handle
        assert first.status == "cancelled"
    else:
        first = await executor.run("grow")
        assert first.status == "paused"
        executor.close()
        executor = DagExecutor(registry, db=db)
    behaviour.update(fail=False, block=False)
    executions.clear()

    resumed = await executor.resume(first.run_id)

    assert resumed.status == "succeeded", resumed.error
    assert list(resumed.outcomes) == ["plan", "search", "tool_1"]  # no twin, no orphan
    assert sorted(executions) == ["plan", "search", "tool_1"]
    assert resumed.cache.get("tool_1", "result") == "tool_1"
    executor.close()
    with closing(sqlite3.connect(db)) as connection:
        stored = json.loads(connection.execute("SELECT spec FROM dag_runs").fetchone()[0])
    assert [node["id"] for node in stored["nodes"]] == ["plan", "search", "tool_1"]
