"""A finished run keeps its record, not the values nobody holds.

The rule: the executor keeps each succeeded run's record (outcomes, timings, usage) but never
its values on its own; they live as long as somebody holds the report, a handle on the run or
the cache. A run that can still be resumed (failed, paused, cancelled) keeps its values.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

import dagger_nb
from dagger_nb import ActionRegistry, Cache
from dagger_nb.dag.events import NodeSucceeded
from dagger_nb.errors import CacheKeyError
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio


class Big:
    """An intermediate value that can be watched with a weak reference."""

    def __init__(self) -> None:
        self.payload = bytearray(2_000_000)


def registry_with_pipeline() -> ActionRegistry:
    registry = ActionRegistry()
    registry.register("make", lambda: Big())
    registry.register("size", lambda big: len(big.payload))
    return registry


PIPELINE = workflow(
    "pipeline",
    {"id": "make", "action": "make"},
    {"id": "size", "action": "size", "inputs": [{"name": "big", "reference": "make.result"}]},
)


def watch(report: dagger_nb.ExecutionReport) -> weakref.ref[Big]:
    return weakref.ref(report.cache.get("make", "result"))


async def test_a_finished_run_lets_go_of_an_intermediate_value_nobody_holds() -> None:
    executor = executor_with(registry_with_pipeline(), PIPELINE)
    report = await executor.run("pipeline")
    assert report.cache.get("size", "result") == 2_000_000
    value, run_id = watch(report), report.run_id
    del report
    gc.collect()
    assert value() is None
    record = executor.handle(run_id).report  # the record stays: outcomes, timings
    assert record is not None and record.status == "succeeded"
    assert [o.status for o in record.outcomes.values()] == ["succeeded", "succeeded"]
    assert all(o.duration_s is not None for o in record.outcomes.values())
    assert executor.runs_frame().loc[0, "status"] == "succeeded"
    assert "digraph" in executor.to_dot(run_id)
    with pytest.raises(CacheKeyError, match=f"run '{run_id}' has ended and its values were released"):
        record.cache.get("make", "result")


async def test_hooks_do_not_keep_values_alive() -> None:
    executor = executor_with(registry_with_pipeline(), PIPELINE)
    seen: list[str] = []
    executor.add_hook(lambda event, run: seen.append(type(event).__name__))

    async def async_hook(event: Any, run: Any) -> None:
        return None

    executor.add_hook(async_hook)
    report = await executor.run("pipeline")
    value = watch(report)
    del report
    gc.collect()
    assert value() is None and "RunFinished" in seen


async def test_values_live_while_the_report_is_held() -> None:
    executor = executor_with(registry_with_pipeline(), PIPELINE)
    report = await executor.run("pipeline")
    value = watch(report)
    gc.collect()
    assert value() is not None
    assert executor.handle(report.run_id).report is report  # the same report, values and all


async def test_a_handle_keeps_what_it_shows_until_it_is_dropped() -> None:
    executor = executor_with(registry_with_pipeline(), PIPELINE)
    handle = executor.start("pipeline")
    report = await handle
    value = watch(report)
    del report
    gc.collect()
    assert value() is not None
    assert handle.report is not None and handle.report.cache.get("size", "result") == 2_000_000
    outputs = [e.outputs async for e in handle.subscribe() if isinstance(e, NodeSucceeded)]
    assert outputs[0]["result"] is value()  # past events replay with their outputs
    assert (await handle.wait()) is handle.report
    del handle, outputs
    gc.collect()
    assert value() is None


async def test_a_cache_the_user_passed_keeps_everything() -> None:
    executor = executor_with(registry_with_pipeline(), PIPELINE)
    cache = Cache()
    report = await executor.run("pipeline", cache)
    value = watch(report)
    del report
    gc.collect()
    assert value() is not None and cache.get("make", "result") is value()


async def test_a_run_that_can_be_resumed_keeps_its_values() -> None:
    registry = registry_with_pipeline()
    registry.register("fail_once", lambda big: 1 / 0)
    spec = workflow(
        "resumable",
        {"id": "make", "action": "make"},
        {"id": "use", "action": "fail_once", "inputs": [{"name": "big", "reference": "make.result"}]},
        max_attempts=1,
    )
    executor = executor_with(registry, spec)
    report = await executor.run("resumable")
    assert report.status == "paused"
    value, run_id = watch(report), report.run_id
    del report
    gc.collect()
    assert value() is not None  # the resume needs it
    registry.register("fail_once", lambda big: len(big.payload))
    resumed = await executor.resume(run_id)
    assert resumed.success and resumed.cache.get("use", "result") == 2_000_000
    del resumed
    gc.collect()
    assert value() is None  # succeeded now: released like any other


async def test_a_handle_made_after_the_end_shows_the_held_report() -> None:
    executor = executor_with(registry_with_pipeline(), PIPELINE)
    report = await executor.run("pipeline")
    later = executor.handle(report.run_id)
    assert later.report is report and later.snapshot() is report
    assert (await later.wait()) is report
