"""A run's events are built only when somebody looks, and then exactly as a listener saw them."""

from __future__ import annotations

import gc
from dataclasses import astuple
from typing import Any

import pytest

from dagger_nb import ActionRegistry
from dagger_nb.dag.events import DagEvent, NodeStarted, NodeSucceeded, RunFinished
from dagger_nb.dag.history import RunEvents
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio


def registry() -> ActionRegistry:
    tries: dict[str, int] = {}
    registry = ActionRegistry()
    registry.register("one", lambda: 1, inline=True)
    registry.register("pair", lambda x: {"low": x, "high": x + 1}, inline=True)

    def flaky(x: int) -> int:  # fails on its first attempt in each run
        tries[str(x)] = tries.get(str(x), 0) + 1
        if tries[str(x)] % 2:
            raise ValueError("first attempt fails")
        return x

    registry.register("flaky", flaky, inline=True)
    registry.register("boom", lambda x: 1 / 0, inline=True)
    return registry


SPEC = workflow(
    "mixed",
    {"id": "a", "action": "one"},
    {"id": "b", "action": "pair", "inputs": [{"name": "x", "reference": "a.result"}]},
    {"id": "c", "action": "flaky", "try_count": 2, "inputs": [{"name": "x", "reference": "b.low"}]},
    {"id": "d", "action": "boom", "try_count": 1, "inputs": [{"name": "x", "reference": "a.result"}]},
    {"id": "e", "action": "pair", "inputs": [{"name": "x", "reference": "d.result"}]},
    on_failure="continue",
    max_parallel_nodes=1,
    retry_strategy="Immediate",
)


def shape(event: DagEvent) -> tuple[Any, ...]:
    """An event without its time and run (which differ between two runs)."""
    values = astuple(event) if not isinstance(event, RunFinished) else (event.status,)
    return (type(event).__name__, *(v for v in values if not isinstance(v, float) and v != event.run_id))


async def test_a_late_subscriber_gets_the_events_a_listener_saw_in_order() -> None:
    executor = executor_with(registry(), SPEC)
    seen: list[DagEvent] = []
    watched = executor.start("mixed")
    watched.add_listener(seen.append)
    await watched
    unwatched = executor.start("mixed")
    await unwatched
    late = [event async for event in unwatched.subscribe()]
    assert [shape(event) for event in late] == [shape(event) for event in seen]
    assert {"NodeRetrying", "NodeFailed", "NodeSkipped", "NodeSucceeded"} <= {type(e).__name__ for e in late}
    succeeded = {event.node: event.outputs for event in late if isinstance(event, NodeSucceeded)}
    assert succeeded["b"] == {"low": 1, "high": 2, "result": {"low": 1, "high": 2}}
    assert succeeded["a"] == {"result": 1}
    times = [event.timestamp for event in late]
    assert times == sorted(times)
    assert all(event.run_id == unwatched.run_id for event in late)


async def test_nobody_watching_means_no_event_object_per_node() -> None:
    nodes = [{"id": f"n{i}", "action": "one"} for i in range(300)]
    executor = executor_with(registry(), workflow("wide", *nodes))
    handle = executor.start("wide")
    await handle
    gc.collect()
    built = [o for o in gc.get_objects() if isinstance(o, NodeStarted | NodeSucceeded) and o.run_id == handle.run_id]
    assert not built
    events = [event async for event in handle.subscribe()]
    assert len(events) == 601 and isinstance(events[-1], RunFinished)


async def test_events_emitted_after_the_history_was_built_are_objects_in_order() -> None:
    stream = RunEvents("r")
    stream.started("a", 1)
    subscription = stream.subscribe()
    stream.succeeded("a", 1, {"result": 3})
    stream.close()
    events = [event async for event in subscription]
    assert [shape(event) for event in events] == [("NodeStarted", "a", 1), ("NodeSucceeded", "a", 1, {"result": 3})]
    assert stream.dropped == 0 and stream.emitted == 2


def test_a_closed_stream_refuses_new_events() -> None:
    stream = RunEvents("r")
    stream.close()
    with pytest.raises(RuntimeError, match="emit\\(\\) called on a closed event stream"):
        stream.started("a", 1)
