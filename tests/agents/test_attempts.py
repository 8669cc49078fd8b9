"""One attempt's changes are durable together or not at all; ctx.delegate; abandoned threads; retries."""

from __future__ import annotations

import itertools
import pickle
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import dagger_nb

pytestmark = pytest.mark.anyio


def stored_task_ids(db: Path) -> set[str]:
    """The task ids in the file, read as another process would."""
    connection = sqlite3.connect(db)
    try:
        return {row[0] for row in connection.execute("SELECT task_id FROM agent_tasks")}
    finally:
        connection.close()


async def wait_for(condition: Any, *, seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.005)


def leaf_agents(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="leaf", registry=registry)
    async def leaf(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        return {"n": input["n"] * 10}


async def test_tasks_an_attempt_adds_reach_the_file_only_when_it_ends(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry
) -> None:
    db = tmp_path / "tasks.db"
    leaf_agents(registry)
    planned = anyio.Event()
    finish_plan = anyio.Event()

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        if ctx.task.dependencies:
            return {"total": sum(out["n"] for out in ctx.dependency_outputs())}
        for n in range(3):
            ctx.spawn("leaf", {"n": n}, description=f"leaf {n}")
        planned.set()
        await finish_plan.wait()
        raise dagger_nb.NeedsDependencies("waiting for the leaves")

    async with dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None) as manager:
        objective = manager.add_objective("job", "plan", "planner", task_id="objective")
        other = manager.add_task("job", "unrelated", "leaf", {"n": 7}, task_id="other")
        handle = manager.start("job")
        await planned.wait()
        await wait_for(lambda: manager.get_task(other).status == "completed")  # rounds were committed meanwhile
        assert stored_task_ids(db) == {objective, other}
        assert manager.get_task(objective).dependencies == []  # its new dependencies wait for the end too
        finish_plan.set()
        report = await handle.wait()
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert report.outcomes[objective].output.data == {"total": 30}
    assert len(stored_task_ids(db)) == 5


async def test_an_attempt_that_never_ends_leaves_nothing(tmp_path: Path, registry: dagger_nb.TaskAgentRegistry) -> None:
    db = tmp_path / "tasks.db"
    leaf_agents(registry)
    planned = anyio.Event()
    attempts: list[int] = []

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        attempts.append(ctx.attempt)
        first = ctx.delegate({"a": {"agent": "leaf", "input": {"n": 1}}}, wait=False)
        if len(attempts) == 1:
            ctx.add_task("half of the plan", "leaf", {"n": 2})
            planned.set()
            await anyio.sleep_forever()
        outputs = ctx.delegate({"a": {"agent": "leaf", "input": {"n": 1}}, "b": {"agent": "leaf", "input": {"n": 2}}})
        return {"first": first, "outputs": outputs}

    async with dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None) as manager:
        objective = manager.add_objective("job", "plan", "planner", task_id="objective")
        handle = manager.start("job")
        await planned.wait()
        assert len(manager.tasks("job")) == 3  # in memory while the attempt runs
        handle.cancel()
        assert (await handle.wait()).status is dagger_nb.JobStatus.CANCELLED
        assert [task.task_id for task in manager.tasks("job")] == [objective]
    assert stored_task_ids(db) == {objective}
    async with dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None) as manager:
        report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert report.outcomes[objective].output.data == {
        "first": {"a": "objective/a"},
        "outputs": {"a": {"n": 10}, "b": {"n": 20}},
    }
    assert sorted(report.outcomes) == ["objective", "objective/a", "objective/b"]


async def test_delegate_spawns_depends_parks_and_returns_the_outputs(registry: dagger_nb.TaskAgentRegistry) -> None:
    runs: list[int] = []

    @dagger_nb.task_agent(name="double", registry=registry)
    async def double(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        upstream = sum(out["value"] for out in ctx.dependency_outputs())
        return {"value": 2 * (input.get("value", 0) + upstream)}

    @dagger_nb.task_agent(name="planner", registry=registry)
    def planner(input: dict, ctx: dagger_nb.TaskContext) -> dict:  # sync: delegate from a worker thread
        runs.append(ctx.attempt)
        results = ctx.delegate(
            {
                "first": {"agent": "double", "input": {"value": 1}, "description": "double one"},
                "second": {"agent": "double", "dependencies": ["first"]},
            }
        )
        return {"answer": results["second"]["value"], "keys": list(results)}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        objective = manager.add_objective("job", "plan", "planner", task_id="goal")
        report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert len(runs) == 2
    assert report.outcomes[objective].output.data == {"answer": 4, "keys": ["first", "second"]}
    assert report.outcomes[objective].dependencies == ["goal/first", "goal/second"]
    first, second = report.outcomes["goal/first"], report.outcomes["goal/second"]
    assert (first.description, first.parent_task_id, first.task_type) == ("double one", "goal", "subtask")
    assert (second.description, second.dependencies) == ("second", ["goal/first"])


@pytest.mark.parametrize(
    ("children", "message"),
    [
        pytest.param({"a": {"agent": "leaf", "colour": "red"}}, r"delegated child 'a': colour: Extra inputs", id="key"),
        pytest.param({"a": {"input": {}}}, r"delegated child 'a': agent: Field required", id="no-agent"),
        pytest.param(
            {"a": {"agent": "leaf", "dependencies": ["b"]}, "b": {"agent": "leaf"}},
            r"delegated child 'a' depends on 'b', which is neither an earlier child",
            id="later-key",
        ),
        pytest.param({"a/b": {"agent": "leaf"}}, r"key 'a/b' must be non-empty and without '/'", id="slash"),
        pytest.param("leaf", r"delegate\(\) takes a mapping or a list of children, got str", id="text"),
        pytest.param([{"agent": "ghost"}], r"unknown agent 'ghost'", id="unknown-agent"),
    ],
)
async def test_delegate_names_a_bad_child(registry: dagger_nb.TaskAgentRegistry, children: Any, message: str) -> None:
    leaf_agents(registry)

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        ctx.delegate(children)
        return {}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        objective = manager.add_objective("job", "plan", "planner")
        report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.FAILED
    assert re.search(message, report.outcomes[objective].status_reason or "")
    assert list(report.outcomes) == [objective]  # nothing of the failed delegation was added


async def test_blocking_itself_through_the_manager_is_part_of_the_attempt(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry
) -> None:
    db = tmp_path / "tasks.db"
    leaf_agents(registry)
    blocked = anyio.Event()
    go_on = anyio.Event()

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        if ctx.attempt > 1 or ctx.task.dependencies:
            return {"done": True}
        child = ctx.add_task("leaf", "leaf", {"n": 1})
        ctx.manager.add_dependency(ctx.task_id, child)
        ctx.manager.update_task_status(ctx.task_id, dagger_nb.TaskStatus.BLOCKED, "my own choice")
        blocked.set()
        await go_on.wait()
        return {"ignored": True}

    async with dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None) as manager:
        objective = manager.add_objective("job", "plan", "planner", task_id="objective")
        handle = manager.start("job")
        await blocked.wait()
        await anyio.sleep(0)
        assert manager.get_task(objective).status == "in_progress"
        assert stored_task_ids(db) == {objective}
        go_on.set()
        report = await handle.wait()
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert report.outcomes[objective].output.data == {"done": True}


async def test_a_timed_out_sync_attempt_is_never_overlapped_by_the_next(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    release = threading.Event()
    lock = threading.Lock()
    running = 0
    most = 0
    attempts: list[int] = []

    @dagger_nb.task_agent(name="slow", registry=registry)
    def slow(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            attempts.append(ctx.attempt)
        try:
            if ctx.attempt == 1:
                release.wait(10)  # outlives its timeout: abandoned in its thread
            return {"attempt": ctx.attempt}
        finally:
            with lock:
                running -= 1

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        task = manager.add_task("job", "slow", "slow", timeout=0.05, max_retries=3)
        handle = manager.start("job")
        await wait_for(lambda: "waits for the abandoned thread" in (manager.get_task(task).status_reason or ""))
        shown = manager.get_task(task)
        assert shown.status == "pending"
        assert shown.status_reason == (
            f"attempt 1 failed: task '{task}' timed out after 0.05s (attempt 1); "
            "attempt 2 waits for the abandoned thread of this one to return"
        )
        assert attempts == [1]  # recorded as timed out at once, and attempt 2 has not started
        release.set()
        report = await handle.wait()
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert attempts == [1, 2]
    assert most == 1
    assert report.outcomes[task].output.data == {"attempt": 2}


async def test_many_quick_timeouts_never_run_two_attempts_at_once(registry: dagger_nb.TaskAgentRegistry) -> None:
    lock = threading.Lock()
    running = 0
    most = 0
    calls = 0

    @dagger_nb.task_agent(name="slow", registry=registry)
    def slow(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        nonlocal running, most, calls
        with lock:
            running += 1
            calls += 1
            most = max(most, running)
        time.sleep(0.06)  # the work itself: slower than the timeout
        with lock:
            running -= 1
        return {}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, max_parallel_tasks=4) as manager:
        task = manager.add_task("job", "slow", "slow", timeout=0.01, max_retries=4)
        report = await manager.run("job")
    assert report.outcomes[task].status == "failed"
    assert report.outcomes[task].status_reason == f"task '{task}' timed out after 0.01s (attempt 5)"
    # An attempt can time out before its thread has even started on a loaded machine, so fewer
    # than five calls may reach the function; what must hold is that no two ever overlap.
    assert 1 <= calls <= 5
    assert most == 1


async def test_retries_yield_to_the_loop_between_attempts(registry: dagger_nb.TaskAgentRegistry) -> None:
    ticks = 0
    seen: list[int] = []

    @dagger_nb.task_agent(name="failing", registry=registry)
    async def failing(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        seen.append(ticks)
        raise RuntimeError("never works")  # without awaiting anything

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0)

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        task = manager.add_task("job", "fails", "failing", max_retries=20)
        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            report = await manager.run("job")
            group.cancel_scope.cancel()
    assert report.outcomes[task].status == "failed"
    assert len(seen) == 21
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def test_cancel_takes_effect_at_once_between_retries(registry: dagger_nb.TaskAgentRegistry) -> None:
    attempts = 0

    @dagger_nb.task_agent(name="failing", registry=registry)
    async def failing(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("never works")

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        task = manager.add_task("job", "fails", "failing", max_retries=1000)
        handle = manager.start("job")
        await wait_for(lambda: attempts >= 1)
        handle.cancel()
        at_cancel = attempts
        with anyio.fail_after(0.1):
            report = await handle.wait()
    assert report.status is dagger_nb.JobStatus.CANCELLED
    assert attempts - at_cancel <= 1
    assert report.outcomes[task].status == "pending"


class PicklingBackend:
    """Runs agents here, but as a cluster backend would: the context crosses a pickle both ways."""

    async def invoke(self, runner: Any, kwargs: Any = None, *, args: tuple, **_: Any) -> Any:
        fn, payload, ctx = args
        ctx = pickle.loads(pickle.dumps(ctx))
        outcome = await runner.fn(fn, payload, ctx) if runner.is_async else runner.fn(fn, payload, ctx)
        return pickle.loads(pickle.dumps(outcome))


async def test_delegate_works_for_agents_on_a_cluster_worker(registry: dagger_nb.TaskAgentRegistry) -> None:
    leaf_agents(registry)
    runs: list[int] = []

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: Any) -> dict:
        runs.append(ctx.attempt)
        outputs = ctx.delegate([{"agent": "leaf", "input": {"n": n}} for n in range(3)])
        return {"values": [out["n"] for out in outputs]}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, backend=PicklingBackend()) as manager:
        objective = manager.add_objective("job", "plan", "planner", task_id="goal")
        report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert len(runs) == 2
    assert report.outcomes[objective].output.data == {"values": [0, 10, 20]}
    assert sorted(report.outcomes) == ["goal", "goal/0", "goal/1", "goal/2"]


async def test_an_abandoned_thread_cannot_add_work_after_its_attempt_ended(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    leaf_agents(registry)
    release = threading.Event()
    late: list[str] = []

    @dagger_nb.task_agent(name="slow", registry=registry)
    def slow(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        if ctx.attempt == 1:
            release.wait(10)
            try:
                ctx.add_task("too late", "leaf", {"n": 1})
            except dagger_nb.TaskError as error:
                late.append(str(error))
        return {}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        task = manager.add_task("job", "slow", "slow", timeout=0.05, max_retries=1, task_id="slow")
        handle = manager.start("job")
        await wait_for(lambda: "waits for the abandoned thread" in (manager.get_task(task).status_reason or ""))
        release.set()
        report = await handle.wait()
        assert [t.task_id for t in manager.tasks("job")] == ["slow"]
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert late == [
        "task 'slow': this attempt has ended (timed out or cancelled); the tasks and dependencies it adds now "
        "are not kept"
    ]


async def test_a_sync_attempt_that_timed_out_before_getting_a_thread_is_not_waited_for(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    calls: list[int] = []

    @dagger_nb.task_agent(name="quick", registry=registry)
    def quick(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        calls.append(ctx.attempt)
        return {"attempt": ctx.attempt}

    limiter = anyio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:  # every worker thread taken: attempt 1 times out before its thread starts
        await limiter.acquire_on_behalf_of(holder)
    try:
        async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
            task = manager.add_task("job", "quick", "quick", timeout=0.05, max_retries=1)
            handle = manager.start("job")
            with anyio.fail_after(10):
                async for event in handle.subscribe():
                    if isinstance(event, dagger_nb.TaskRetrying):
                        break
            for holder in holders:
                limiter.release_on_behalf_of(holder)
            holders = []
            with anyio.fail_after(10):  # attempt 2 does not wait for a thread that never started
                report = await handle.wait()
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert calls == [2]  # attempt 1's call never ran: not late, after its timeout
    assert report.outcomes[task].output.data == {"attempt": 2}
