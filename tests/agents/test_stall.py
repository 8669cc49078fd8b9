"""Stall detection: each stall action fires once per stall (short heartbeat, synchronised on events)."""

from __future__ import annotations

import anyio
import pytest

import dagger_nb

pytestmark = pytest.mark.anyio

HEARTBEAT = 0.05


def hanging_agent(registry: dagger_nb.TaskAgentRegistry, release: anyio.Event) -> None:
    @dagger_nb.task_agent(name="hang", registry=registry)
    async def hang(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        await release.wait()
        return {"released": True}


async def test_terminate_job_fails_pending_and_running_tasks(registry: dagger_nb.TaskAgentRegistry) -> None:
    hanging_agent(registry, anyio.Event())
    async with dagger_nb.TaskManager(
        registry=registry,
        heartbeat_interval=HEARTBEAT,
        stall_action=dagger_nb.StallAction.TERMINATE_JOB,
        max_parallel_tasks=1,
    ) as manager:
        manager.add_task("job", "running", "hang", task_id="running")
        manager.add_task("job", "waiting", "hang", task_id="waiting")
        manager.add_task("job", "later", "hang", task_id="later", dependencies=["waiting"])
        handle = manager.start("job")
        report = await handle.wait()

    assert report.status is dagger_nb.JobStatus.FAILED
    reasons = {tid: (t.status, t.status_reason) for tid, t in report.outcomes.items()}
    assert reasons == {tid: (dagger_nb.TaskStatus.FAILED, "Job terminated due to inactivity") for tid in reasons}
    stalls = [e for e in handle.events.history if isinstance(e, dagger_nb.JobStalled)]
    assert len(stalls) == 1
    assert set(stalls[0].stalled_tasks) == {"running", "waiting", "later"}
    assert stalls[0].action == "terminate_job"


async def test_notify_planning_agent_adds_a_task_once_per_stall(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    release = anyio.Event()
    hanging_agent(registry, release)
    plans: list[dict] = []

    @dagger_nb.task_agent(name="planning_agent", registry=registry)
    async def planning_agent(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        plans.append(input)
        return {"plan": "unstick"}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=HEARTBEAT) as manager:
        manager.add_task("job", "stuck", "hang", task_id="stuck")
        handle = manager.start("job")
        stalls = 0
        async for event in handle.subscribe():
            if isinstance(event, dagger_nb.JobStalled):
                stalls += 1
                assert event.stalled_tasks == ("stuck",)
            planned = isinstance(event, dagger_nb.TaskCompleted) and event.output == {"plan": "unstick"}
            if planned and stalls == 2:
                release.set()
        report = await handle.wait()

    assert report.success
    assert stalls == 2  # one per stall: after the planner's task, the job stalled again
    assert plans == [{"job_id": "job", "stalled_tasks": ["stuck"]}] * 2
    planner_tasks = [t for t in report.outcomes.values() if t.agent == "planning_agent"]
    assert len(planner_tasks) == 2


async def test_notify_without_planning_agent_still_emits(registry: dagger_nb.TaskAgentRegistry) -> None:
    release = anyio.Event()
    hanging_agent(registry, release)
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=HEARTBEAT) as manager:
        manager.add_task("job", "stuck", "hang")
        handle = manager.start("job")
        async for event in handle.subscribe():
            if isinstance(event, dagger_nb.JobStalled):
                assert event.action == "notify_planning_agent"
                release.set()
        report = await handle.wait()
    assert report.success
    assert len(report.outcomes) == 1


async def test_callable_stall_action_gets_the_job_id(registry: dagger_nb.TaskAgentRegistry) -> None:
    release = anyio.Event()
    hanging_agent(registry, release)
    called: list[str] = []

    def on_stall(job_id: str) -> None:
        called.append(job_id)
        release.set()

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=HEARTBEAT, stall_action=on_stall) as manager:
        manager.add_task("job", "stuck", "hang")
        handle = manager.start("job")
        report = await handle.wait()

    assert called == ["job"]
    assert report.success
    assert [e.action for e in handle.events.history if isinstance(e, dagger_nb.JobStalled)] == ["on_stall"]


async def test_async_callable_stall_action(registry: dagger_nb.TaskAgentRegistry) -> None:
    release = anyio.Event()
    hanging_agent(registry, release)

    async def on_stall(job_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        release.set()

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=HEARTBEAT, stall_action=on_stall) as m:
        m.add_task("job", "stuck", "hang")
        assert (await m.run("job")).success
