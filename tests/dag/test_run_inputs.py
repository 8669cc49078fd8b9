"""A run's inputs belong to the run: runs sharing a cache never see each other's; a reference is
read one way everywhere (a bare legacy ``KEY`` is ``inputs.KEY``)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import dagger_nb
from dagger_nb import ActionRegistry, Cache
from dagger_nb.cache import RunCache, parse_input_from_name
from dagger_nb.dag.spec import InputSpec
from dagger_nb.dag.validation import check_workflow
from dagger_nb.errors import DaggerError
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio

READS = [{"name": "x", "reference": "inputs.x"}, {"name": "y", "reference": "y"}]  # y: the bare legacy form


def gated(
    registry: ActionRegistry, started: list[anyio.Event], gate: anyio.Event, seen: dict[str, dict[str, Any]]
) -> dagger_nb.WorkflowSpec:
    """``wait`` holds each run until ``gate`` is set; ``read`` then reads the run's inputs four ways
    (as arguments, through ``ctx.cache``, ``parse_input_from_name`` and ``ctx.inputs``) into
    ``seen[run_id]`` (the shared cache keeps only the latest run's ``read.result``)."""

    async def wait() -> None:
        started.pop(0).set()
        await gate.wait()

    def read(x: Any, y: Any, ctx: dagger_nb.NodeContext) -> None:  # no output: both runs share namespace 'read'
        inputs = [InputSpec.model_validate(item) for item in READS]
        seen[ctx.run_id] = {
            "arguments": (x, y),
            "ctx_cache": (ctx.cache.get("inputs", "x"), ctx.cache.get("inputs", "y")),
            "parsed": (parse_input_from_name(ctx.cache, "x", inputs), parse_input_from_name(ctx.cache, "y", inputs)),
            "ctx_inputs": (ctx.inputs["x"], ctx.inputs["y"]),
        }

    registry.register("wait", wait)
    registry.register("read", read)
    return workflow(
        "reads",
        {"id": "wait", "action": "wait"},
        {"id": "read", "action": "read", "dependencies": ["wait"], "inputs": READS},
    )


async def test_two_concurrent_runs_on_one_cache_each_see_their_own_inputs() -> None:
    registry = ActionRegistry()
    first_started, second_started, gate = anyio.Event(), anyio.Event(), anyio.Event()
    seen: dict[str, dict[str, Any]] = {}
    executor = executor_with(registry, gated(registry, [first_started, second_started], gate, seen))
    shared = Cache()
    with anyio.fail_after(30):
        first = executor.start("reads", inputs={"x": 1, "y": "one"}, cache=shared)
        await first_started.wait()  # the first run is under way before the second one starts
        second = executor.start("reads", inputs={"x": 2, "y": "two"}, cache=shared)
        await second_started.wait()
        gate.set()
        one, two = await first, await second
    assert one.success and two.success
    seen_one, seen_two = seen[one.run_id], seen[two.run_id]
    for way in ("arguments", "ctx_cache", "parsed", "ctx_inputs"):
        assert seen_one[way] == (1, "one"), way
        assert seen_two[way] == (2, "two"), way
    # Each report shows its own run's inputs over the shared cache, which holds outputs only.
    assert one.cache.namespace("inputs") == {"x": 1, "y": "one"}
    assert two.cache.namespace("inputs") == {"x": 2, "y": "two"}
    assert "inputs" not in shared.namespaces()


async def test_a_runs_inputs_are_read_only() -> None:
    registry = ActionRegistry()

    def overwrite(ctx: dagger_nb.NodeContext) -> None:
        ctx.cache.insert("inputs", "x", "changed")

    registry.register("overwrite", overwrite)
    executor = executor_with(registry, workflow("w", {"id": "a", "action": "overwrite"}))
    report = await executor.run("w", inputs={"x": 1})
    assert report.outcomes["a"].status == "failed"
    assert "a run's inputs are read-only" in (report.outcomes["a"].error or "")
    assert report.cache.get("inputs", "x") == 1


async def test_inputs_put_in_a_cache_by_hand_still_reach_the_run() -> None:
    registry = ActionRegistry()
    registry.register("echo", lambda x: x)
    executor = executor_with(registry, workflow("w", {"id": "a", "action": "echo", "inputs": [READS[0]]}))
    cache = Cache()
    cache.insert("inputs", "x", "by hand")
    assert (await executor.run("w", cache)).cache.get("a", "result") == "by hand"
    assert (await executor.run("w", cache, inputs={"x": "given"})).cache.get("a", "result") == "given"


async def test_a_missing_run_input_is_not_taken_from_another_namespace() -> None:
    registry = ActionRegistry()
    registry.register("echo", lambda y: y)
    executor = executor_with(registry, workflow("w", {"id": "a", "action": "echo", "inputs": [READS[1]]}))
    shared = Cache()
    shared.insert("other", "y", 1)  # a namespace that is not the run's inputs
    report = await executor.run("w", shared, inputs={"z": 1})
    assert report.outcomes["a"].status == "failed"
    assert "input 'y' references run input 'y'" in (report.outcomes["a"].error or "")
    assert "which was not given" in (report.outcomes["a"].error or "")


def test_the_bare_legacy_reference_is_read_as_inputs_everywhere() -> None:
    bare = InputSpec(name="y", reference="y")
    assert bare.source == ("inputs", "y")
    # validation takes it as a run input (no unknown-node problem) ...
    spec = workflow("w", {"id": "a", "action": "echo", "inputs": [{"name": "y", "reference": "y"}]})
    assert list(check_workflow(spec)) == []
    # ... and so does the cache helper, where it used to read namespace 'y', key ''
    cache = RunCache(Cache(), {"y": 7})
    cache.insert("y", "", "wrong")
    assert parse_input_from_name(cache, "y", [bare]) == 7
    # a node's outputs are still what a dotted reference reads
    cache.insert("load", "rows", 3)
    assert parse_input_from_name(cache, "rows", [InputSpec(name="rows", reference="load.rows")]) == 3


def test_the_run_cache_view_keeps_inputs_apart_from_the_shared_cache() -> None:
    shared = Cache()
    first, second = RunCache(shared, {"x": 1}), RunCache(shared, {"x": 2})
    first.insert("a", "result", 10)
    assert (first.get("inputs", "x"), second.get("inputs", "x")) == (1, 2)
    assert second.get("a", "result") == 10 and shared.namespaces() == ["a"]
    assert first.items() == [("inputs", "x", 1), ("a", "result", 10)] and len(first) == 2
    assert list(first.to_frame()["namespace"]) == ["inputs", "a"]
    with pytest.raises(DaggerError, match="read-only"):
        first.insert("inputs", "x", 3)
    with pytest.raises(dagger_nb.CacheKeyError, match="'inputs'.*x"):
        first.get("inputs", "missing")
    first.clear()
    assert first.get("inputs", "x") == 1 and shared.namespaces() == []


async def test_a_concurrent_run_storing_the_same_node_is_not_taken_for_the_actions_own_write() -> None:
    # The first run's node is still running when the second run's same node stores its value in the
    # shared cache: the first run must keep its own return value (and not warn about a write of its own).
    registry = ActionRegistry()
    holding, release = anyio.Event(), anyio.Event()
    seen: dict[str, Any] = {}

    async def compute(x: int, ctx: dagger_nb.NodeContext) -> int:
        if x == 1:
            holding.set()
            await release.wait()
        return x * 10

    def after(value: int, ctx: dagger_nb.NodeContext) -> None:
        seen[ctx.run_id] = value

    registry.register("compute", compute)
    registry.register("after", after)
    executor = executor_with(registry, workflow(
        "w",
        {"id": "compute", "action": "compute", "inputs": [READS[0]]},
        {"id": "after", "action": "after", "dependencies": ["compute"],
         "inputs": [{"name": "value", "reference": "compute.result"}]},
    ))
    shared = Cache()
    with anyio.fail_after(30):
        first = executor.start("w", inputs={"x": 1}, cache=shared)
        await holding.wait()
        second = await executor.run("w", shared, inputs={"x": 2})
        assert shared.get("compute", "result") == 20
        release.set()
        one = await first
    assert one.success and second.success
    assert seen == {one.run_id: 10, second.run_id: 20}
    assert not one.outcomes["compute"].notes
    assert shared.get("compute", "result") == 10  # the latest value stored
