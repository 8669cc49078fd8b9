"""The record a succeeded run leaves in its executor tells what the full report told, compactly."""

from __future__ import annotations

import dataclasses
import gc
from typing import Any

import anyio
import pytest

from dagger_nb import ActionRegistry
from dagger_nb.dag.events import NodeSucceeded
from dagger_nb.dag.record import CompactOutcomes, compact_outcomes
from dagger_nb.dag.report import NodeOutcome
from dagger_nb.dag.spec import NodeSpec, WorkflowSpec
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio

WIDTH = 300


def registry() -> ActionRegistry:
    registry = ActionRegistry()
    registry.register("one", lambda: 1)
    registry.register("loud", lambda x: print(f"got {x}") or x)
    calls: list[int] = []

    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first try")
        return x

    registry.register("flaky", flaky)
    registry.register("total", lambda **parts: sum(parts.values()))
    return registry


def fan_out() -> WorkflowSpec:
    children = [{"id": f"c{i}", "action": "one"} for i in range(WIDTH)]
    return workflow(
        "fan",
        *children,
        {"id": "loud", "action": "loud", "inputs": [{"name": "x", "reference": "c0.result"}]},
        {"id": "flaky", "action": "flaky", "inputs": [{"name": "x", "reference": "c1.result"}]},
        {"id": "sink", "action": "total",
         "inputs": [{"name": f"p{i}", "reference": f"c{i}.result"} for i in range(WIDTH)]},
        retry_strategy="Immediate",
    )


def live_outcomes() -> int:
    gc.collect()
    return sum(type(thing) is NodeOutcome for thing in gc.get_objects())


async def test_the_record_of_a_succeeded_run_equals_its_full_report_without_an_object_per_plain_node() -> None:
    executor = executor_with(registry(), fan_out())
    before = live_outcomes()
    report = await executor.run("fan")
    assert report.success
    full = dict(report.outcomes)
    frame = report.to_frame()
    run_id = report.run_id
    del report
    gc.collect()
    record = executor.handle(run_id).report
    assert record is not None and isinstance(record.outcomes, CompactOutcomes)
    assert list(record.outcomes) == list(full)
    assert dict(record.outcomes.items()) == full  # every field of every node, in order
    assert list(record.outcomes.values()) == list(full.values())
    assert all(record.outcomes[node_id] == outcome for node_id, outcome in full.items())
    assert record.outcomes["loud"].logs == ["got 1"]
    assert record.outcomes["flaky"].attempts == 2 and "first try" in record.outcomes["flaky"].retry_messages[0]
    assert record.to_frame().equals(frame)
    assert record.counts() == {"succeeded": WIDTH + 3}
    del full, frame
    # only the two nodes with more to tell than their times are still objects
    assert live_outcomes() - before == 2


async def test_the_record_reads_as_a_read_only_mapping() -> None:
    executor = executor_with(registry(), fan_out())
    run_id = (await executor.run("fan")).run_id
    gc.collect()
    record = executor.handle(run_id).report
    assert record is not None
    outcomes = record.outcomes
    assert len(outcomes) == WIDTH + 3 and "c7" in outcomes and "nope" not in outcomes and 7 not in outcomes
    assert outcomes.get("nope") is None
    with pytest.raises(KeyError, match="nope"):
        outcomes["nope"]
    with pytest.raises(TypeError):
        outcomes["c0"] = NodeOutcome("c0", "one")  # type: ignore[index]
    assert executor.runs_frame().loc[0, "nodes"] == WIDTH + 3
    assert 'c7' in executor.to_dot(run_id)


# One value unlike a new outcome's for every field a run can set: a field added to NodeOutcome
# must be added here, so that a record never drops what it holds.
SET: dict[str, Any] = {
    "status": "failed", "attempts": 2, "retry_messages": ["Attempt 1 failed: x"], "error": "boom",
    "notes": ["a note"], "worker": "tcp://w:1", "traceback": "Traceback ...", "logs": ["a line"],
    "reason": "code changed", "cached_from": "abc", "tokens": 5, "cost": 0.5, "models": ("m",),
}


def test_a_record_keeps_every_field_that_is_not_a_new_outcomes() -> None:
    assert set(SET) | {"node", "action", "started_at", "finished_at", "_clock"} == {
        field.name for field in dataclasses.fields(NodeOutcome)
    }
    spec = WorkflowSpec(name="w", nodes=[NodeSpec(id=f"n{i}", action="x") for i in range(len(SET) + 1)])
    outcomes = {}
    for position, node in enumerate(spec.nodes):
        outcome = NodeOutcome(node.id, node.action, status="succeeded", attempts=1, started_at=10.0 + position,
                              finished_at=20.0 + position)
        if position < len(SET):
            name = list(SET)[position]
            setattr(outcome, name, SET[name])
        outcomes[node.id] = outcome
    record = compact_outcomes(spec, outcomes)
    assert isinstance(record, CompactOutcomes)
    assert dict(record.items()) == outcomes


def test_outcomes_that_do_not_follow_the_workflow_are_kept_as_they_are() -> None:
    spec = WorkflowSpec(name="w", nodes=[NodeSpec(id="a", action="x"), NodeSpec(id="b", action="x")])
    reordered = {"b": NodeOutcome("b", "x"), "a": NodeOutcome("a", "x")}
    fewer = {"a": NodeOutcome("a", "x")}
    assert compact_outcomes(spec, reordered) is reordered
    assert compact_outcomes(spec, fewer) is fewer


async def test_a_run_that_grew_keeps_the_nodes_it_added_in_its_record() -> None:
    executor = executor_with(registry(), workflow("grow", {"id": "a", "action": "one"}))

    def add_one_after_a(event: Any, run: Any) -> None:
        if isinstance(event, NodeSucceeded) and event.node == "a":
            run.add_node("loud", id="added", inputs={"x": "a.result"})

    executor.add_hook(add_one_after_a)
    report = await executor.run("grow")
    full, run_id = dict(report.outcomes), report.run_id
    del report
    gc.collect()
    record = executor.handle(run_id).report
    assert record is not None and isinstance(record.outcomes, CompactOutcomes)
    assert list(record.outcomes) == ["a", "added"] and dict(record.outcomes.items()) == full
    assert record.outcomes["added"].logs == ["got 1"]


async def test_the_record_does_not_follow_later_changes_to_the_spec() -> None:
    spec = fan_out()
    executor = executor_with(registry(), spec)
    run_id = (await executor.run("fan")).run_id
    gc.collect()
    spec.nodes.append(NodeSpec(id="late", action="one"))
    spec.nodes[0].action = "renamed"
    record = executor.handle(run_id).report
    assert record is not None and isinstance(record.outcomes, CompactOutcomes)
    assert len(record.outcomes) == len(list(record.outcomes)) == WIDTH + 3
    assert "late" not in record.outcomes and record.outcomes.get("late") is None
    assert record.outcomes["c0"].action == "one"
    assert list(reversed(record.outcomes))[:2] == ["sink", "flaky"]
    assert repr(record.outcomes).startswith("CompactOutcomes({'c0': NodeOutcome(node='c0', action='one'")
    assert repr(record.outcomes).endswith(f"... ({WIDTH} more)}})")


async def test_a_report_dropped_in_another_thread_leaves_the_compact_record() -> None:
    executor = executor_with(registry(), fan_out())
    held = [await executor.run("fan")]
    run_id = held[0].run_id
    gc.collect()  # nothing but `held` holds the report now
    await anyio.to_thread.run_sync(held.clear)
    record = executor.handle(run_id).report
    assert record is not None and isinstance(record.outcomes, CompactOutcomes)
    assert record.outcomes["flaky"].attempts == 2


async def test_a_node_s_prints_are_on_its_outcome_while_it_runs() -> None:
    registry = ActionRegistry()
    printed, finish = anyio.Event(), anyio.Event()

    async def talk() -> int:
        print("working on it")
        printed.set()
        await finish.wait()
        return 1

    registry.register("talk", talk)
    executor = executor_with(registry, workflow("talky", {"id": "t", "action": "talk"}))
    handle = executor.start("talky")
    await printed.wait()
    assert handle.snapshot().outcomes["t"].logs == ["working on it"]
    finish.set()
    assert (await handle).outcomes["t"].logs == ["working on it"]
