"""A re-entered planner whose plan changes between runs (a language model answers differently
each time) ends its job with a clear error instead of parking for ever; a plan kept stable (made
once by a child task, whose output is stored) runs to completion."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest

import dagger_nb

pytestmark = pytest.mark.anyio


def leaf(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("leaf", lambda input, ctx: {"done": input.get("step")})


async def test_a_plan_that_changes_between_runs_fails_the_planner_naming_the_keys(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    leaf(registry)
    answers = itertools.count()
    runs: list[int] = []

    async def planner(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        answer = next(answers)  # a different plan every time, as a language model may give
        runs.append(answer)
        plan = {f"step{answer}_{i}": {"agent": "leaf", "input": {"step": i}} for i in range(2)}
        return {"results": ctx.delegate(plan)}

    registry.register("planner", planner)
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        manager.add_task("job", "plan", "planner", task_id="goal", task_type="objective", max_retries=2)
        with anyio.fail_after(30):  # it used to park and re-plan for ever
            report = await manager.run("job")
        goal = manager.get_task("goal")
    assert report.status is dagger_nb.JobStatus.FAILED
    assert goal is not None and goal.status is dagger_nb.TaskStatus.FAILED
    assert goal.output is not None and goal.output.error is not None
    assert goal.output.error.startswith(
        "task 'goal': delegate() got a different plan than an earlier run of this task: new keys 'step"
    )
    assert "; the earlier run delegated 'step0_0', 'step0_1'. A planner that is run again" in goal.output.error
    assert len(runs) == 4  # the first plan, its re-entry, two retries: then it ends
    assert sorted(report.outcomes) == ["goal", "goal/step0_0", "goal/step0_1"]


async def test_a_plan_made_once_by_a_child_stays_stable_and_completes(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    leaf(registry)
    answers = itertools.count()

    def propose(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        answer = next(answers)  # differs on every call: called once, its output is stored
        return {"steps": [f"step{answer}_{i}" for i in range(3)]}

    async def planner(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        plan = ctx.delegate({"plan": {"agent": "propose"}})["plan"]
        results = ctx.delegate({step: {"agent": "leaf", "input": {"step": step}} for step in plan["steps"]})
        return {"results": results}

    registry.register("propose", propose)
    registry.register("planner", planner)
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        manager.add_objective("job", "plan", "planner", task_id="goal")
        with anyio.fail_after(30):
            report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert next(answers) == 1  # the plan was asked for once
    assert report.result == {"results": {f"step0_{i}": {"done": f"step0_{i}"} for i in range(3)}}


async def test_a_sync_planner_with_a_changing_plan_ends_too(registry: dagger_nb.TaskAgentRegistry) -> None:
    leaf(registry)
    answers = itertools.count()

    def planner(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        answer = next(answers)
        return ctx.delegate([{"agent": "leaf", "input": {"step": answer}}] * (answer + 1))  # more each time

    registry.register("planner", lambda input, ctx: {"out": planner(input, ctx)})
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        manager.add_objective("job", "plan", "planner", task_id="goal")
        with anyio.fail_after(30):
            report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.FAILED
    error = report.outcomes["goal"].output.error
    assert error.startswith("task 'goal': delegate() got a different plan than an earlier run of this task: "
                            "new keys '1'; the earlier run delegated '0'.")  # a plan that grows: '0' and '1'
    assert sorted(report.outcomes) == ["goal", "goal/0"]
