"""Token usage: ctx.record_usage totals per task and per job, persisted; TaskManager(max_tokens=...) budgets."""

from __future__ import annotations

import json
import math
import pickle
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import dagger_nb
from dagger_nb.agents import JobUsage

pytestmark = pytest.mark.anyio


class PicklingBackend:
    """Runs agents here, but as a cluster backend would: the context crosses a pickle both ways."""

    async def invoke(self, runner: Any, kwargs: Any = None, *, args: tuple, **_: Any) -> Any:
        fn, payload, ctx = args
        ctx = pickle.loads(pickle.dumps(ctx))
        outcome = await runner.fn(fn, payload, ctx) if runner.is_async else runner.fn(fn, payload, ctx)
        return pickle.loads(pickle.dumps(outcome))


def spending_agents(registry: dagger_nb.TaskAgentRegistry, attempts: list[str] | None = None) -> None:
    """``spend``: reports ``input["tokens"]`` (in two reports) and optionally a cost and a model."""

    @dagger_nb.task_agent(name="spend", registry=registry)
    async def spend(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        if attempts is not None:
            attempts.append(ctx.task_id)
        half = input["tokens"] // 2
        ctx.record_usage(tokens=half, cost=input.get("cost"), model=input.get("model"))
        ctx.record_usage(tokens=input["tokens"] - half)
        return {"spent": input["tokens"]}

    @dagger_nb.task_agent(name="free", registry=registry)
    def free(input: dict, ctx: dagger_nb.TaskContext) -> dict:  # sync: reports from a worker thread
        ctx.record_usage(tokens=0, model="none")
        return {}


async def test_usage_is_totalled_per_task_and_for_the_job(registry: dagger_nb.TaskAgentRegistry) -> None:
    spending_agents(registry)
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        a = manager.add_task("job", "a", "spend", {"tokens": 31, "cost": 0.25, "model": "small"}, task_id="a")
        b = manager.add_task("job", "b", "spend", {"tokens": 9, "cost": 0.5, "model": "large"}, dependencies=[a])
        c = manager.add_task("job", "c", "free", dependencies=[b])
        report = await manager.run("job")
        assert manager.job_usage("job") == JobUsage(40, 0.75)
        frame = manager.tasks_frame("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert (report.tokens, report.cost) == (40, 0.75)
    assert (report.outcomes[a].tokens, report.outcomes[a].cost, report.outcomes[a].models) == (31, 0.25, ["small"])
    assert (report.outcomes[b].tokens, report.outcomes[b].models) == (9, ["large"])
    assert (report.outcomes[c].tokens, report.outcomes[c].cost, report.outcomes[c].models) == (0, None, ["none"])
    assert "40 tokens" in repr(report) and "40 tokens" in report._repr_html_()
    for table in (report.to_frame(), frame):
        assert table["tokens"].tolist() == [31, 9, 0]
        assert table["cost"].tolist()[:2] == [0.25, 0.5] and math.isnan(table["cost"].tolist()[2])
        assert table["models"].tolist() == ["small", "large", "none"]


async def test_usage_of_every_attempt_counts(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="flaky", registry=registry)
    async def flaky(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        ctx.record_usage(tokens=10)
        if ctx.attempt < 3:
            raise RuntimeError("try again")
        return {}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        task = manager.add_task("job", "flaky", "flaky", max_retries=2)
        report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert report.outcomes[task].tokens == 30 and report.tokens == 30


async def test_usage_is_stored_and_counts_over_later_runs(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry
) -> None:
    spending_agents(registry)
    db = tmp_path / "jobs.db"
    async with dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None) as manager:
        manager.add_task("job", "a", "spend", {"tokens": 70, "cost": 1.5, "model": "m"}, task_id="a")
        assert (await manager.run("job")).tokens == 70
    connection = sqlite3.connect(db)
    try:
        (data,) = connection.execute("SELECT data FROM agent_tasks WHERE task_id = 'a'").fetchone()
    finally:
        connection.close()
    assert {key: json.loads(data)[key] for key in ("tokens", "cost", "models")} == {
        "tokens": 70, "cost": 1.5, "models": ["m"],
    }
    async with dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None, max_tokens=100) as reopened:
        assert reopened.job_usage("job") == JobUsage(70, 1.5)
        assert reopened.get_task("a").tokens == 70  # type: ignore[union-attr]
        reopened.add_task("job", "b", "spend", {"tokens": 40}, task_id="b")
        report = await reopened.run("job")  # the budget counts the earlier run's 70 tokens
    assert report.status is dagger_nb.JobStatus.FAILED
    assert report.outcomes["b"].status_reason == "token budget exceeded: 110 of 100"
    assert report.tokens == 110


async def test_the_attempt_that_passes_the_budget_fails_its_task_and_the_job(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    attempts: list[str] = []
    spending_agents(registry, attempts)
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, max_tokens=100) as manager:
        a = manager.add_task("job", "a", "spend", {"tokens": 60}, task_id="a")
        b = manager.add_task("job", "b", "spend", {"tokens": 60}, task_id="b", dependencies=[a], max_retries=3)
        c = manager.add_task("job", "c", "spend", {"tokens": 1}, task_id="c", dependencies=[b])
        handle = manager.start("job")
        report = await handle
    assert report.status is dagger_nb.JobStatus.FAILED
    assert report.outcomes[a].status is dagger_nb.TaskStatus.COMPLETED
    failed = report.outcomes[b]
    assert (failed.status, failed.status_reason) == (dagger_nb.TaskStatus.FAILED, "token budget exceeded: 120 of 100")
    assert failed.output is not None and failed.output.error == "token budget exceeded: 120 of 100"
    assert failed.tokens == 60  # what it used is counted, though it failed
    assert report.outcomes[c].status_reason == "dependency b failed"
    assert attempts == ["a", "b"]  # no retry past the budget, nothing after it
    assert report.tokens == 120
    assert report.failed() == {"b": "token budget exceeded: 120 of 100", "c": "dependency b failed"}
    failures = [e for e in handle.events.history if isinstance(e, dagger_nb.TaskFailed)]
    assert [(e.task_id, e.error) for e in failures] == [
        ("b", "token budget exceeded: 120 of 100"), ("c", "dependency b failed"),
    ]


async def test_a_total_equal_to_the_budget_is_within_it(registry: dagger_nb.TaskAgentRegistry) -> None:
    spending_agents(registry)
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, max_tokens=100) as manager:
        manager.add_task("job", "a", "spend", {"tokens": 60})
        manager.add_task("job", "b", "spend", {"tokens": 40})
        report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED and report.tokens == 100


async def test_what_the_attempt_past_the_budget_added_is_not_kept(registry: dagger_nb.TaskAgentRegistry) -> None:
    spending_agents(registry)

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        ctx.record_usage(tokens=500, model="big")
        return {"plan": ctx.delegate({"x": {"agent": "spend", "input": {"tokens": 1}}})}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, max_tokens=100) as manager:
        goal = manager.add_objective("job", "plan", "planner", task_id="goal")
        report = await manager.run("job")
        assert [task.task_id for task in manager.tasks("job")] == ["goal"]
    assert report.status is dagger_nb.JobStatus.FAILED
    assert report.outcomes[goal].status_reason == "token budget exceeded: 500 of 100"
    assert report.result is None


async def test_usage_reported_on_a_cluster_worker_counts_even_when_the_agent_fails(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    @dagger_nb.task_agent(name="remote", registry=registry)
    def remote(input: dict, ctx: Any) -> dict:
        ctx.record_usage(tokens=input["tokens"], cost=0.1, model="m")
        if input.get("fail"):
            raise ValueError("the model said no")
        return {}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, backend=PicklingBackend()) as manager:
        ok = manager.add_task("job", "ok", "remote", {"tokens": 5})
        bad = manager.add_task("job", "bad", "remote", {"tokens": 7, "fail": True})
        report = await manager.run("job")
    assert report.outcomes[ok].tokens == 5
    assert report.outcomes[bad].tokens == 7
    assert report.outcomes[bad].status_reason == "ValueError: the model said no"
    assert report.tokens == 12


async def test_usage_reported_by_an_abandoned_thread_still_counts(registry: dagger_nb.TaskAgentRegistry) -> None:
    release = threading.Event()

    @dagger_nb.task_agent(name="slow", registry=registry)
    def slow(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        if ctx.attempt == 1:
            release.wait(10)  # outlives its timeout
        ctx.record_usage(tokens=10 * ctx.attempt)
        return {}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        task = manager.add_task("job", "slow", "slow", timeout=0.05, max_retries=1)
        handle = manager.start("job")
        with anyio.fail_after(10):
            async for event in handle.subscribe():
                if isinstance(event, dagger_nb.TaskRetrying):
                    break
        release.set()
        report = await handle
        assert manager.job_usage("job").tokens == 30
    assert report.outcomes[task].tokens == 30  # attempt 1's 10, reported late, and attempt 2's 20
    assert report.tokens == 30


COST = "cost must be a finite number >= 0 \\(or None\\),"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"tokens": -1}, "tokens must be a whole number >= 0, got -1", id="negative"),
        pytest.param({"tokens": 1.5}, "tokens must be a whole number >= 0, got 1.5", id="fraction"),
        pytest.param({"tokens": True}, "tokens must be a whole number >= 0, got True", id="boolean"),
        pytest.param({"tokens": "12"}, "tokens must be a whole number >= 0, got '12'", id="text"),
        pytest.param({"tokens": None}, "tokens must be a whole number >= 0, got None", id="none"),
        pytest.param({"tokens": 1, "cost": -0.5}, f"{COST} got -0.5", id="cost"),
        pytest.param({"tokens": 1, "cost": False}, f"{COST} got False", id="cost-bool"),
        pytest.param({"tokens": 1, "cost": math.nan}, f"{COST} got nan", id="nan"),
        pytest.param({"tokens": 1, "model": 4}, "model must be a name \\(or None\\), got 4", id="model"),
    ],
)
@pytest.mark.parametrize("where", ["here", "on a worker"])
async def test_bad_usage_is_a_clear_error(
    registry: dagger_nb.TaskAgentRegistry, arguments: dict, message: str, where: str
) -> None:
    caught: list[BaseException] = []

    @dagger_nb.task_agent(name="bad", registry=registry)
    async def bad(input: dict, ctx: Any) -> dict:
        try:
            ctx.record_usage(**arguments)
        except Exception as error:
            caught.append(error)
            raise
        return {}

    backend = PicklingBackend() if where == "on a worker" else None
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, backend=backend) as manager:
        task = manager.add_task("job", "bad", "bad")
        report = await manager.run("job")
    assert len(caught) == 1 and isinstance(caught[0], dagger_nb.TaskError)
    assert caught[0].args[0].startswith("record_usage(): ")
    with pytest.raises(dagger_nb.TaskError, match=message):
        raise caught[0]
    assert report.outcomes[task].status is dagger_nb.TaskStatus.FAILED
    assert report.outcomes[task].tokens == 0


@pytest.mark.parametrize("budget", [-1, 0, 1.5, True, "100"])
def test_a_bad_budget_is_refused(budget: Any) -> None:
    # As for a DAG run and a workflow's config.max_tokens: a budget of 0 would allow nothing.
    message = f"max_tokens must be a whole number >= 1 \\(or None\\), got {budget!r}"
    with pytest.raises(dagger_nb.TaskError, match=message):
        dagger_nb.TaskManager(max_tokens=budget)
