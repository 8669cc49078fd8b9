"""Token budgets: ``ctx.record_usage`` totals per node and per run, and ``max_tokens`` enforced."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dagger_nb
from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.errors import ActionError, TokenBudgetExceeded
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio


def spend(ctx: Any, tokens: int, cost: float | None = None, model: str | None = None) -> int:
    """Report ``tokens`` (module level: a Dask worker process imports it)."""
    ctx.record_usage(tokens=tokens, cost=cost, model=model)
    return tokens


def spend_twice_then_fail(ctx: Any) -> None:
    ctx.record_usage(tokens=5, model="small")
    ctx.record_usage(tokens=7, model="big")
    raise RuntimeError("the model said no")


def chain(*tokens: int, **config: Any) -> dagger_nb.WorkflowSpec:
    """Nodes ``n0``, ``n1``... one after the other, each spending its tokens."""
    nodes = [
        {"id": f"n{i}", "action": "spend", "inputs": [{"name": "tokens", "value": t}],
         "dependencies": [f"n{i - 1}"] if i else []}
        for i, t in enumerate(tokens)
    ]
    return workflow("chain", *nodes, **config)


def registry_with_spend() -> ActionRegistry:
    registry = ActionRegistry()
    registry.register("spend", spend)
    return registry


async def test_usage_is_totalled_per_node_and_for_the_run() -> None:
    registry = registry_with_spend()
    registry.register("fails", spend_twice_then_fail)
    spec = workflow(
        "usage",
        {"id": "a", "action": "spend", "inputs": [{"name": "tokens", "value": 100}, {"name": "cost", "value": 0.5},
                                                     {"name": "model", "value": "m1"}]},
        {"id": "b", "action": "fails"},
        max_attempts=2, on_failure="continue",
    )
    report = await executor_with(registry, spec).run("usage")
    a, b = report.outcomes["a"], report.outcomes["b"]
    assert (a.tokens, a.cost, a.models) == (100, 0.5, ("m1",))
    assert (b.tokens, b.cost, b.models) == (24, None, ("small", "big"))  # both failed attempts counted
    assert (report.tokens, report.cost) == (124, 0.5)
    frame = report.to_frame().set_index("node")
    assert frame.loc["a", "tokens"] == 100 and frame.loc["b", "models"] == "small, big"
    assert frame.loc["a", "cost"] == 0.5
    assert "124 tokens" in repr(report) and "124 tokens" in report._repr_html_()


async def test_the_node_that_passes_the_budget_fails_and_the_run_stops() -> None:
    registry = registry_with_spend()
    spec = chain(40, 50, 30, 5, max_tokens=100, max_attempts=3, on_failure="stop")
    report = await executor_with(registry, spec).run("chain")
    assert report.status == "failed"
    third = report.outcomes["n2"]
    assert third.status == "failed" and third.error == "token budget exceeded: 120 of 100"
    assert third.attempts == 1  # a spent budget is final: never retried
    assert report.error == "node 'n2' failed: token budget exceeded: 120 of 100"
    assert report.outcomes["n3"].status == "pending"
    assert not report.cache.contains("n2", "result")  # its result is not stored
    assert (report.tokens, report.max_tokens) == (120, 100)
    assert "120 tokens of 100" in repr(report)


async def test_reaching_the_budget_exactly_is_allowed() -> None:
    report = await executor_with(registry_with_spend(), chain(60, 40, max_tokens=100)).run("chain")
    assert report.success and report.tokens == 100


async def test_with_on_failure_continue_only_nodes_spending_past_the_budget_fail() -> None:
    registry = registry_with_spend()
    spec = workflow(
        "wide",
        {"id": "big", "action": "spend", "inputs": [{"name": "tokens", "value": 90}]},
        {"id": "over", "action": "spend", "inputs": [{"name": "tokens", "value": 20}], "dependencies": ["big"]},
        {"id": "after", "action": "spend", "inputs": [{"name": "tokens", "value": 1}], "dependencies": ["over"]},
        {"id": "free", "action": "spend", "inputs": [{"name": "tokens", "value": 0}], "dependencies": ["over"]},
        max_tokens=100, on_failure="continue",
    )
    report = await executor_with(registry, spec).run("wide")
    statuses = {node: outcome.status for node, outcome in report.outcomes.items()}
    assert statuses == {"big": "succeeded", "over": "failed", "after": "skipped", "free": "skipped"}
    assert report.outcomes["over"].error == "token budget exceeded: 110 of 100"


async def test_an_action_that_swallows_the_budget_error_still_fails() -> None:
    registry = ActionRegistry()
    seen: list[str] = []

    def stubborn(ctx: Any) -> str:
        try:
            ctx.record_usage(tokens=500)
        except TokenBudgetExceeded as error:
            seen.append(str(error))
        return "done anyway"

    registry.register("stubborn", stubborn)
    report = await executor_with(registry, workflow("w", {"id": "s", "action": "stubborn"}, max_tokens=10,
                                                    max_attempts=5)).run("w")
    assert seen == ["token budget exceeded: 500 of 10"]
    assert report.outcomes["s"].error == "token budget exceeded: 500 of 10" and report.outcomes["s"].attempts == 1


async def test_paused_on_the_budget_then_resumed_with_a_bigger_one() -> None:
    registry = registry_with_spend()
    spec = chain(60, 60, max_tokens=100, on_failure="pause")
    first = executor_with(registry, spec)
    report = await first.run("chain")
    assert report.status == "paused" and report.outcomes["n1"].error == "token budget exceeded: 120 of 100"
    first.max_tokens = 1000  # what a person does: allow more, then resume
    first._runs[report.run_id].config = first._effective_config(spec)
    resumed = await first.resume(report.run_id)
    assert resumed.success and resumed.tokens == 180  # spent is spent: the failed attempt counts too


async def test_executor_max_tokens_overrides_the_workflow() -> None:
    spec = chain(30, 30, max_tokens=1000)
    report = await executor_with(registry_with_spend(), spec, max_tokens=50).run("chain")
    assert report.outcomes["n1"].error == "token budget exceeded: 60 of 50" and report.max_tokens == 50


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", None])
async def test_bad_token_counts_name_the_node(bad: object) -> None:
    registry = registry_with_spend()
    report = await executor_with(registry, chain(0)).run("chain")
    assert report.success
    spec = workflow("bad", {"id": "greedy", "action": "spend", "inputs": [{"name": "tokens", "value": bad}]})
    report = await executor_with(registry, spec).run("bad")
    error = report.outcomes["greedy"].error or ""
    assert "node 'greedy': record_usage(): tokens must be a whole number >= 0" in error
    assert report.tokens == 0


def test_bad_cost_and_model_are_refused_with_the_node() -> None:
    ctx = dagger_nb.NodeContext("n", "w", "r", 1, {}, dagger_nb.Cache())
    with pytest.raises(ActionError, match=r"node 'n': record_usage\(\): cost must be a finite number"):
        ctx.record_usage(tokens=1, cost=float("nan"))
    with pytest.raises(ActionError, match="model must be a name"):
        ctx.record_usage(tokens=1, model=3)  # type: ignore[arg-type]
    assert ctx.usage is None


@pytest.mark.parametrize("bad", [0, -5, 2.0, True])
def test_executor_max_tokens_must_be_a_positive_whole_number(bad: object) -> None:
    with pytest.raises(dagger_nb.ExecutionError, match="max_tokens must be a whole number >= 1"):
        DagExecutor(ActionRegistry(), max_tokens=bad)  # type: ignore[arg-type]


async def test_usage_is_stored_and_loaded_back(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    registry = registry_with_spend()
    spec = chain(40, 70, 5, max_tokens=100, on_failure="pause")
    executor = executor_with(registry, spec, db=db)
    report = await executor.run("chain")
    assert report.status == "paused"
    executor.close()
    later = executor_with(registry, spec, db=db, max_tokens=500)
    assert later.runs_frame().loc[0, "tokens"] == 110
    resumed = await later.resume(report.run_id)  # loaded from the file: totals come back
    assert resumed.success
    assert [resumed.outcomes[n].tokens for n in ("n0", "n1", "n2")] == [40, 140, 5]
    assert (resumed.tokens, resumed.max_tokens) == (185, 500)
    later.close()


async def test_a_sync_action_in_a_thread_reports_usage() -> None:
    registry = ActionRegistry()

    def threaded(ctx: Any) -> str:
        for _ in range(3):
            ctx.record_usage(tokens=2)
        return "ok"

    registry.register("threaded", threaded)
    report = await executor_with(registry, workflow("t", {"id": "t", "action": "threaded"})).run("t")
    assert report.success and report.tokens == 6


# -- on Dask: usage recorded in the worker's copy of ctx travels back with the attempt --------------


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                           dashboard_address=":0", silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


async def test_usage_travels_back_from_dask_workers(dask_client: Any) -> None:
    from dagger_nb.backends.dask import DaskBackend

    registry = registry_with_spend()
    registry.register("fails", spend_twice_then_fail)
    spec = workflow(
        "remote",
        {"id": "a", "action": "spend", "inputs": [{"name": "tokens", "value": 30}, {"name": "cost", "value": 0.25},
                                                     {"name": "model", "value": "m"}]},
        {"id": "b", "action": "fails", "dependencies": ["a"]},
        {"id": "c", "action": "spend", "inputs": [{"name": "tokens", "value": 80}], "dependencies": ["a"]},
        max_tokens=100, on_failure="continue",
    )
    report = await executor_with(registry, spec, backend=DaskBackend(dask_client)).run("remote")
    assert report.outcomes["a"].worker is not None  # it did run on the cluster
    assert (report.outcomes["a"].tokens, report.outcomes["a"].cost, report.outcomes["a"].models) == (30, 0.25, ("m",))
    assert report.outcomes["b"].tokens == 12  # a failed attempt's usage comes back with its error
    over = [o for o in (report.outcomes["b"], report.outcomes["c"]) if o.error and "budget" in o.error]
    assert len(over) >= 1 and report.tokens == 122
    assert all(o.error.startswith("token budget exceeded: ") and o.error.endswith(" of 100") for o in over)
