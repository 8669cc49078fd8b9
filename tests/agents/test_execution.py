"""Running jobs: ordering, dynamic dependencies, schemas, retries, timeouts, cascades, cancel."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest

import dagger_nb
from dagger_nb.errors import NoRunningLoop

pytestmark = pytest.mark.anyio


def manager_for(registry: dagger_nb.TaskAgentRegistry, **options: Any) -> dagger_nb.TaskManager:
    options.setdefault("heartbeat_interval", None)
    return dagger_nb.TaskManager(registry=registry, **options)


def fake_llm(prompt: str) -> str:
    """A deterministic stand-in for a language model."""
    return f"LLM({prompt})"


async def test_planner_breaks_objective_into_dependent_tasks(registry: dagger_nb.TaskAgentRegistry) -> None:
    runs: list[str] = []

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        runs.append("planner")
        if ctx.attempt == 1 and not ctx.task.dependencies:
            retrieval = ctx.spawn("retrieval", {"query": input["topic"]}, description="Retrieve sources")
            review = ctx.add_task("Review sources", "review", dependencies=[retrieval])
            drafting = ctx.add_task("Draft the article", "drafting", dependencies=[review])
            ctx.manager.add_dependency(ctx.task_id, drafting)
            raise dagger_nb.NeedsDependencies("waiting for the article")
        return {"article": ctx.dependency_outputs()[-1]["draft"]}

    @dagger_nb.task_agent(name="retrieval", registry=registry)
    async def retrieval(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        return {"sources": [fake_llm(f"search {input['query']}")]}

    @dagger_nb.task_agent(name="review", registry=registry)
    async def review(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        (found,) = ctx.dependency_outputs()
        return {"review": fake_llm(f"review {found['sources'][0]}")}

    @dagger_nb.task_agent(name="drafting", registry=registry)
    def drafting(input: dict, ctx: dagger_nb.TaskContext) -> dict:  # sync: runs in a worker thread
        (reviewed,) = ctx.dependency_outputs()
        return {"draft": f"Draft embedding [{reviewed['review']}]"}

    async with manager_for(registry) as manager:
        objective = manager.add_objective("article", "Write about bees", "planner", {"topic": "bees"})
        handle = manager.start("article")
        report = await handle.wait()

    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert runs == ["planner", "planner"]
    completed = [e.task_id for e in handle.events.history if isinstance(e, dagger_nb.TaskCompleted)]
    agents = {tid: task.agent for tid, task in report.outcomes.items()}
    assert [agents[tid] for tid in completed] == ["retrieval", "review", "drafting", "planner"]
    assert all(task.status is dagger_nb.TaskStatus.COMPLETED for task in report.outcomes.values())
    article = report.outcomes[objective].output
    assert article is not None
    assert article.data == {"article": "Draft embedding [LLM(review LLM(search bees))]"}
    children = [t for t in report.outcomes.values() if t.parent_task_id == objective]
    assert {t.agent for t in children} == {"retrieval", "review", "drafting"}
    assert next(t for t in children if t.agent == "retrieval").task_type is dagger_nb.TaskType.SUBTASK
    assert manager.cache.get(objective, "output") == article.data


async def test_blocked_agent_runs_exactly_twice(registry: dagger_nb.TaskAgentRegistry) -> None:
    seen: list[list[dict]] = []

    @dagger_nb.task_agent(name="parent", registry=registry)
    async def parent(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        seen.append(ctx.dependency_outputs())
        if not ctx.task.dependencies:
            ctx.spawn("child", {"x": 20}, description="child")
            ctx.spawn("child", {"x": 22}, description="child")
            raise dagger_nb.NeedsDependencies("need children")
        return {"total": sum(out["y"] for out in ctx.dependency_outputs())}

    @dagger_nb.task_agent(name="child", registry=registry)
    async def child(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        return {"y": input["x"]}

    async with manager_for(registry) as manager:
        root = manager.add_task("job", "parent", "parent")
        handle = manager.start("job")
        report = await handle.wait()

    assert report.success
    assert seen == [[], [{"y": 20}, {"y": 22}]]
    assert report.outcomes[root].output.data == {"total": 42}  # type: ignore[union-attr]
    blocked = [e for e in handle.events.history if isinstance(e, dagger_nb.TaskBlocked)]
    assert [(e.task_id, e.reason) for e in blocked] == [(root, "need children")]


@pytest.mark.parametrize("then", ["returns", "raises"])
async def test_blocked_through_manager_is_not_overwritten(registry: dagger_nb.TaskAgentRegistry, then: str) -> None:
    calls = 0

    @dagger_nb.task_agent(name="waiter", registry=registry)
    async def waiter(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            ctx.spawn("helper", {}, description="help")
            ctx.manager.update_task_status(ctx.task_id, dagger_nb.TaskStatus.BLOCKED, "needs help")
            if then == "raises":
                raise RuntimeError("neither failed nor retried: the task is parked")
            return {"ignored": True}
        return {"done": True}

    gate = anyio.Event()

    @dagger_nb.task_agent(name="helper", registry=registry)
    async def helper(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        await gate.wait()
        return {}

    async with manager_for(registry) as manager:
        task_id = manager.add_task("job", "wait", "waiter")
        handle = manager.start("job")
        async for event in handle.subscribe():
            if isinstance(event, dagger_nb.TaskBlocked):
                assert event.reason == "needs help"
                assert manager.get_task(task_id).status is dagger_nb.TaskStatus.BLOCKED  # type: ignore[union-attr]
                gate.set()
        report = await handle.wait()

    assert calls == 2
    assert report.outcomes[task_id].output.data == {"done": True}  # type: ignore[union-attr]


async def test_blocked_without_live_work_ends_the_job_failed(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="stuck", registry=registry)
    async def stuck(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        raise dagger_nb.NeedsDependencies("nothing to wait for")

    async with manager_for(registry) as manager:
        task_id = manager.add_task("job", "stuck", "stuck")
        report = await manager.run("job")

    assert report.status is dagger_nb.JobStatus.FAILED
    assert report.outcomes[task_id].status is dagger_nb.TaskStatus.BLOCKED
    assert report.outcomes[task_id].status_reason == "nothing to wait for"


async def test_input_schema_rejection_skips_the_agent(registry: dagger_nb.TaskAgentRegistry) -> None:
    called = []

    @dagger_nb.task_agent(name="typed", input_schema={"type": "object", "required": ["topic"]}, registry=registry)
    async def typed(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        called.append(input)
        return {}

    async with manager_for(registry) as manager:
        task_id = manager.add_task("job", "typed", "typed", {"subject": "bees"}, max_retries=3)
        report = await manager.run("job")

    assert called == []
    task = report.outcomes[task_id]
    assert task.status is dagger_nb.TaskStatus.FAILED
    assert task.retry_count == 0
    assert task.status_reason == "agent 'typed' input schema: invalid payload at '$': 'topic' is a required property"
    assert report.status is dagger_nb.JobStatus.FAILED


async def test_output_schema_rejection_fails_the_task(registry: dagger_nb.TaskAgentRegistry) -> None:
    schema = {"type": "object", "properties": {"score": {"type": "number"}}, "required": ["score"]}

    @dagger_nb.task_agent(name="scorer", output_schema=schema, registry=registry)
    async def scorer(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        return {"score": input["score"]}

    async with manager_for(registry) as manager:
        good = manager.add_task("job", "good", "scorer", {"score": 0.5})
        bad = manager.add_task("job", "bad", "scorer", {"score": "high"})
        report = await manager.run("job")

    assert report.outcomes[good].status is dagger_nb.TaskStatus.COMPLETED
    assert report.outcomes[bad].status is dagger_nb.TaskStatus.FAILED
    assert report.outcomes[bad].status_reason == (
        "agent 'scorer' output schema: invalid payload at '$.score': 'high' is not of type 'number'"
    )
    assert report.outcomes[bad].output == dagger_nb.TaskOutput(success=False, error=report.outcomes[bad].status_reason)
    assert not manager.cache.contains(bad, "output")


async def test_an_invalid_output_is_a_failed_attempt_and_retried(registry: dagger_nb.TaskAgentRegistry) -> None:
    # A language model may answer in the right shape the next time, so retries apply.
    answers = iter([{"score": "high"}, {"score": 0.9}, {"score": "low"}, {"score": "low"}])
    calls: list[str] = []

    @dagger_nb.task_agent(name="judge", output_schema={"type": "object", "properties": {"score": {"type": "number"}}},
                          registry=registry)
    async def judge(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        calls.append(ctx.task_id)
        return next(answers)

    async with manager_for(registry, max_parallel_tasks=1) as manager:
        second_try = manager.add_task("job", "second try", "judge", task_id="second-try", max_retries=1)
        never = manager.add_task("job", "never", "judge", task_id="never", dependencies=[second_try], max_retries=1)
        handle = manager.start("job")
        report = await handle.wait()

    assert calls == [second_try, second_try, never, never]
    assert report.outcomes[second_try].status is dagger_nb.TaskStatus.COMPLETED
    assert report.outcomes[second_try].output.data == {"score": 0.9}  # type: ignore[union-attr]
    invalid = "agent 'judge' output schema: invalid payload at '$.score': 'low' is not of type 'number'"
    assert report.outcomes[never].status is dagger_nb.TaskStatus.FAILED
    assert report.outcomes[never].status_reason == invalid
    retried = [(e.task_id, e.attempt) for e in handle.events.history if isinstance(e, dagger_nb.TaskRetrying)]
    assert retried == [(second_try, 1), (never, 1)]


async def test_non_dict_output_fails(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("number", lambda input, ctx: 42)
    async with manager_for(registry) as manager:
        task_id = manager.add_task("job", "n", "number")
        report = await manager.run("job")
    assert report.outcomes[task_id].status_reason == "agent 'number' returned int, expected a dict"


async def test_sync_agents_run_in_a_worker_thread(registry: dagger_nb.TaskAgentRegistry) -> None:
    threads: dict[str, int] = {}

    @dagger_nb.task_agent(name="blocking", registry=registry)
    def blocking(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        threads["sync"] = threading.get_ident()
        return {}

    @dagger_nb.task_agent(name="awaiting", registry=registry)
    async def awaiting(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        threads["async"] = threading.get_ident()
        return {}

    async with manager_for(registry) as manager:
        manager.add_task("job", "sync", "blocking")
        manager.add_task("job", "async", "awaiting")
        assert (await manager.run("job")).success

    assert threads["async"] == threading.get_ident()
    assert threads["sync"] != threading.get_ident()


async def test_retries_until_success_then_give_up(registry: dagger_nb.TaskAgentRegistry) -> None:
    attempts: dict[str, int] = {}

    @dagger_nb.task_agent(name="flaky", registry=registry)
    async def flaky(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        attempts[ctx.task_id] = ctx.attempt
        if ctx.attempt <= input["failures"]:
            raise RuntimeError(f"boom {ctx.attempt}")
        return {"attempt": ctx.attempt}

    async with manager_for(registry) as manager:
        lucky = manager.add_task("job", "lucky", "flaky", {"failures": 2}, max_retries=2)
        unlucky = manager.add_task("job", "unlucky", "flaky", {"failures": 5}, max_retries=1)
        handle = manager.start("job")
        report = await handle.wait()

    assert report.outcomes[lucky].status is dagger_nb.TaskStatus.COMPLETED
    assert report.outcomes[lucky].retry_count == 2
    assert report.outcomes[lucky].output.data == {"attempt": 3}  # type: ignore[union-attr]
    assert report.outcomes[unlucky].status is dagger_nb.TaskStatus.FAILED
    assert report.outcomes[unlucky].status_reason == "RuntimeError: boom 2"
    assert attempts == {lucky: 3, unlucky: 2}
    retries = [(e.task_id, e.attempt, e.error) for e in handle.events.history if isinstance(e, dagger_nb.TaskRetrying)]
    assert sorted(retries) == sorted(
        [
            (lucky, 1, "RuntimeError: boom 1"),
            (lucky, 2, "RuntimeError: boom 2"),
            (unlucky, 1, "RuntimeError: boom 1"),
        ]
    )


async def test_timeout_bounds_each_attempt(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="slow", registry=registry)
    async def slow(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        if ctx.attempt <= input["hangs"]:
            await anyio.sleep_forever()
        return {"attempt": ctx.attempt}

    async with manager_for(registry) as manager:
        recovers = manager.add_task("job", "recovers", "slow", {"hangs": 1}, timeout=0.05, max_retries=1)
        hangs = manager.add_task("job", "hangs", "slow", {"hangs": 9}, timeout=0.05)
        report = await manager.run("job")

    assert report.outcomes[recovers].status is dagger_nb.TaskStatus.COMPLETED
    assert report.outcomes[recovers].output.data == {"attempt": 2}  # type: ignore[union-attr]
    assert report.outcomes[hangs].status is dagger_nb.TaskStatus.FAILED
    assert report.outcomes[hangs].status_reason == f"task '{hangs}' timed out after 0.05s (attempt 1)"


async def test_failure_cascades_to_dependents(registry: dagger_nb.TaskAgentRegistry) -> None:
    ran: list[str] = []

    @dagger_nb.task_agent(name="step", registry=registry)
    async def step(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        ran.append(ctx.task_id)
        if input.get("fail"):
            raise ValueError("bad data")
        return {}

    async with manager_for(registry) as manager:
        manager.add_task("job", "a", "step", {"fail": True}, task_id="a")
        manager.add_task("job", "b", "step", task_id="b", dependencies=["a"])
        manager.add_task("job", "c", "step", task_id="c", dependencies=["b"])
        manager.add_task("job", "free", "step", task_id="free")
        manager.add_task("job", "r", "step", task_id="r")
        manager.update_task_status("r", dagger_nb.TaskStatus.REJECTED, "not wanted")
        manager.add_task("job", "after-r", "step", task_id="after-r", dependencies=["r"])
        handle = manager.start("job")
        report = await handle.wait()

    assert sorted(ran) == ["a", "free"]
    reasons = {tid: (t.status, t.status_reason) for tid, t in report.outcomes.items()}
    assert reasons == {
        "a": (dagger_nb.TaskStatus.FAILED, "ValueError: bad data"),
        "b": (dagger_nb.TaskStatus.FAILED, "dependency a failed"),
        "c": (dagger_nb.TaskStatus.FAILED, "dependency b failed"),
        "free": (dagger_nb.TaskStatus.COMPLETED, None),
        "r": (dagger_nb.TaskStatus.REJECTED, "not wanted"),
        "after-r": (dagger_nb.TaskStatus.FAILED, "dependency r failed"),
    }
    assert report.status is dagger_nb.JobStatus.FAILED
    failed = [(e.task_id, e.error) for e in handle.events.history if isinstance(e, dagger_nb.TaskFailed)]
    assert sorted(failed) == sorted(
        (tid, reason) for tid, (status, reason) in reasons.items() if status is dagger_nb.TaskStatus.FAILED
    )


async def test_accepted_satisfies_dependencies(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("echo", lambda input, ctx: {"deps": ctx.dependency_outputs()})
    async with manager_for(registry) as manager:
        manager.add_task("job", "reviewed by a person", "echo", task_id="human")
        manager.update_task_status("human", "accepted")
        manager.add_task("job", "next", "echo", task_id="next", dependencies=["human"])
        report = await manager.run("job")
    assert report.success
    assert report.outcomes["next"].output.data == {"deps": [{}]}  # type: ignore[union-attr]


async def test_parallel_tasks_are_bounded(registry: dagger_nb.TaskAgentRegistry) -> None:
    running = 0
    peak = 0
    gate = anyio.Event()

    @dagger_nb.task_agent(name="busy", registry=registry)
    async def busy(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return {}

    async with manager_for(registry, max_parallel_tasks=3) as manager:
        for n in range(8):
            manager.add_task("job", f"t{n}", "busy")
        handle = manager.start("job")
        started = 0
        async for event in handle.subscribe():
            if isinstance(event, dagger_nb.TaskStarted):
                started += 1
                if started == 3:
                    await anyio.wait_all_tasks_blocked()
                    assert running == 3
                    assert handle.status is dagger_nb.JobStatus.RUNNING
                    gate.set()
        report = await handle
    assert peak == 3
    assert report.success


async def test_cancel_leaves_unstarted_tasks_pending(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="forever", registry=registry)
    async def forever(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        await anyio.sleep_forever()
        return {}

    async with manager_for(registry, max_parallel_tasks=1) as manager:
        for n in range(3):
            manager.add_task("job", f"t{n}", "forever", task_id=f"t{n}")
        handle = manager.start("job")
        async for event in handle.subscribe():
            if isinstance(event, dagger_nb.TaskStarted):
                handle.cancel()
        report = await handle.wait()
        assert handle.status is dagger_nb.JobStatus.CANCELLED
        assert report.status is dagger_nb.JobStatus.CANCELLED
        assert {t.status for t in report.outcomes.values()} == {dagger_nb.TaskStatus.PENDING}
        assert report.outcomes["t0"].status_reason == "job cancelled while the task was running"
        assert manager.job_status("job") is dagger_nb.JobStatus.CANCELLED
        assert isinstance(handle.events.history[-1], dagger_nb.JobFinished)
        assert handle.events.history[-1].status is dagger_nb.JobStatus.CANCELLED


async def test_events_replay_to_late_subscribers(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("echo", lambda input, ctx: input)
    async with manager_for(registry) as manager:
        manager.add_task("job", "one", "echo", {"a": 1}, task_id="one")
        handle = manager.start("job")
        assert isinstance(handle, dagger_nb.JobHandle)
        report = await handle.wait()
        assert isinstance(report, dagger_nb.JobReport)
        events = [event async for event in handle.subscribe()]
    assert [type(e).__name__ for e in events] == ["TaskStarted", "TaskCompleted", "JobFinished"]
    assert all(isinstance(e.timestamp, float) for e in events)
    started, completed, _ = events
    # a task event carries the time of the change it reports, as the task records it
    assert started.timestamp <= completed.timestamp == report.outcomes["one"].updated_at.timestamp()
    assert events[1].output == {"a": 1}
    frame = report.to_frame()
    assert list(frame["task_id"]) == ["one"]
    assert list(frame["status"]) == ["completed"]


async def test_tasks_added_while_running_are_announced(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="grow", registry=registry)
    async def grow(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        if input["depth"] < 2:
            ctx.add_task(f"depth {input['depth'] + 1}", "grow", {"depth": input["depth"] + 1})
        return {}

    async with manager_for(registry) as manager:
        manager.add_task("job", "depth 0", "grow", {"depth": 0})
        handle = manager.start("job")
        report = await handle.wait()
    added = [e for e in handle.events.history if isinstance(e, dagger_nb.TaskAdded)]
    assert [e.description for e in added] == ["depth 1", "depth 2"]
    assert len(report.outcomes) == 3 and report.success


async def test_allowed_agents_leave_others_pending(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("a", lambda input, ctx: {})
    registry.register("b", lambda input, ctx: {})
    async with manager_for(registry) as manager:
        ta = manager.add_task("job", "a", "a")
        tb = manager.add_task("job", "b", "b")
        report = await manager.run("job", allowed_agents=["a"])
        assert report.outcomes[ta].status is dagger_nb.TaskStatus.COMPLETED
        assert report.outcomes[tb].status is dagger_nb.TaskStatus.PENDING
        assert report.status is dagger_nb.JobStatus.FAILED
        assert (await manager.run("job")).success
        with pytest.raises(dagger_nb.AgentNotFound, match="unknown agent 'zz'"):
            await manager.run("job", allowed_agents=["zz"])


async def test_start_errors(registry: dagger_nb.TaskAgentRegistry) -> None:
    gate = anyio.Event()

    @dagger_nb.task_agent(name="wait", registry=registry)
    async def wait(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        await gate.wait()
        return {}

    async with manager_for(registry) as manager:
        with pytest.raises(dagger_nb.TaskError, match="unknown job 'nope' \\(known: none\\)"):
            manager.start("nope")
        manager.add_task("job", "w", "wait")
        handle = manager.start("job")
        with pytest.raises(dagger_nb.ExecutionError, match="job 'job' is already running"):
            manager.start("job")
        with pytest.raises(dagger_nb.ExecutionError, match="jobs still running: job"):
            manager.close()
        assert manager.running_jobs() == ["job"]
        gate.set()
        assert (await handle.wait()).success
        assert manager.running_jobs() == []


async def test_aclose_cancels_background_jobs(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="forever", registry=registry)
    async def forever(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        await anyio.sleep_forever()
        return {}

    manager = manager_for(registry)
    manager.add_task("job", "f", "forever")
    handle = manager.start("job")
    async for event in handle.subscribe():
        if isinstance(event, dagger_nb.TaskStarted):
            break
    await manager.aclose()
    report = await handle.wait()
    assert report.status is dagger_nb.JobStatus.CANCELLED


NO_LOOP = "TaskManager.{}\\(\\) needs a running event loop .*; in a script use manager\\.run_sync\\(job_id\\)"


def test_start_and_run_need_a_running_loop(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("echo", lambda input, ctx: input)
    with manager_for(registry) as manager:
        manager.add_task("job", "e", "echo")
        with pytest.raises(NoRunningLoop, match=NO_LOOP.format("start")):
            manager.start("job")
        with pytest.raises(NoRunningLoop, match=NO_LOOP.format("run")):
            manager.run("job")  # raises at once, not when awaited: a script gets the error where it called
        assert manager.running_jobs() == []
        assert manager.run_sync("job").success


async def test_run_from_a_thread_without_a_loop_names_run_sync(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("echo", lambda input, ctx: input)
    async with manager_for(registry) as manager:
        task_id = manager.add_task("job", "e", "echo", {"v": 1})
        with pytest.raises(NoRunningLoop, match=NO_LOOP.format("run")):
            await anyio.to_thread.run_sync(manager.run, "job")
        report = await anyio.to_thread.run_sync(manager.run_sync, "job")  # what that thread should call
        assert report.outcomes[task_id].output.data == {"v": 1}  # type: ignore[union-attr]


async def test_run_sync_inside_a_running_loop(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="spawner", registry=registry)
    def spawner(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        if not ctx.task.dependencies:
            ctx.spawn("echo", {"v": 1}, description="child")
            raise dagger_nb.NeedsDependencies()
        return {"children": ctx.dependency_outputs()}

    registry.register("echo", lambda input, ctx: input)
    with manager_for(registry) as manager:
        task_id = manager.add_task("job", "s", "spawner")
        report = manager.run_sync("job")  # a private loop in a worker thread
    assert report.outcomes[task_id].output.data == {"children": [{"v": 1}]}  # type: ignore[union-attr]


async def test_aclose_cancels_jobs_run_by_other_tasks_and_waits_for_them(registry: Any) -> None:
    started = anyio.Event()

    @dagger_nb.task_agent(name="forever", registry=registry)
    async def forever(input: dict[str, Any], ctx: dagger_nb.TaskContext) -> dict[str, Any]:
        started.set()
        await anyio.sleep_forever()
        return {}

    manager = dagger_nb.TaskManager(registry=registry)
    manager.add_objective("j", "never ends", "forever")
    reports = []

    async def run_job() -> None:
        reports.append(await manager.run("j"))

    async with anyio.create_task_group() as group:
        group.start_soon(run_job)
        await started.wait()
        with anyio.fail_after(5):
            await manager.aclose()
    assert reports[0].status is dagger_nb.JobStatus.CANCELLED


async def test_waited_callbacks_run_in_the_waiting_task(registry: Any) -> None:
    @dagger_nb.task_agent(name="quick", registry=registry)
    async def quick(input: dict[str, Any], ctx: dagger_nb.TaskContext) -> dict[str, Any]:
        return {}

    manager = dagger_nb.TaskManager(registry=registry)
    manager.add_objective("j", "quick", "quick")
    calls: list[str] = []
    handle = manager.start("j")
    handle.add_waited_callback(lambda: calls.append("waited"))
    await handle
    assert calls == ["waited"]
    await manager.aclose()
