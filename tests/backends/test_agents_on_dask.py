"""Task agents on a real Dask cluster: the same jobs, the agents run in worker processes.

The task manager's behavioural tests (tests/agents) whose agents keep no state
in the test's process are rerun here as they are, every manager they build
given the Dask backend; the tests below them cover what only a cluster shows.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dagger_nb
import tests.agents.test_execution as execution_tests
import tests.agents.test_persistence as persistence_tests
from dagger_nb import NeedsDependencies, TaskStatus
from dagger_nb.backends.dask import DaskBackend
from tests.backends.test_dask_backend import scheduler_keys

pytestmark = pytest.mark.anyio


@pytest.fixture
def registry() -> dagger_nb.TaskAgentRegistry:
    """The task agents' registry (the executor's ``registry`` fixture is an ``ActionRegistry``)."""
    return dagger_nb.TaskAgentRegistry()


@pytest.fixture(autouse=True)
def on_dask(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, dask_client: Any) -> Iterator[None]:
    """Every ``dagger_nb.TaskManager`` a test builds runs its agents on the cluster (and does)."""
    backend = DaskBackend(dask_client)
    calls: list[str] = []
    invoke = DaskBackend.invoke

    async def counted(self: DaskBackend, callee: Any, *args: Any, **options: Any) -> Any:
        calls.append(callee.name)
        return await invoke(self, callee, *args, **options)

    class OnDask(dagger_nb.TaskManager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("backend", backend)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(DaskBackend, "invoke", counted)
    monkeypatch.setattr(dagger_nb, "TaskManager", OnDask)
    yield
    if request.node.name not in RUN_NO_AGENT:
        assert calls, "the test ran no agent through the Dask backend"


# the input is refused before the agent would run; the task recovered BLOCKED never runs; no job
RUN_NO_AGENT = {
    "test_input_schema_rejection_skips_the_agent",
    "test_in_progress_tasks_are_recovered[at-most-once]",
    "test_a_backend_without_invoke_is_refused",
}

# execution
test_blocked_without_live_work_ends_the_job_failed = execution_tests.test_blocked_without_live_work_ends_the_job_failed
test_input_schema_rejection_skips_the_agent = execution_tests.test_input_schema_rejection_skips_the_agent
test_output_schema_rejection_fails_the_task = execution_tests.test_output_schema_rejection_fails_the_task
test_non_dict_output_fails = execution_tests.test_non_dict_output_fails
test_accepted_satisfies_dependencies = execution_tests.test_accepted_satisfies_dependencies
test_events_replay_to_late_subscribers = execution_tests.test_events_replay_to_late_subscribers
test_tasks_added_while_running_are_announced = execution_tests.test_tasks_added_while_running_are_announced
test_allowed_agents_leave_others_pending = execution_tests.test_allowed_agents_leave_others_pending
test_start_and_run_need_a_running_loop = execution_tests.test_start_and_run_need_a_running_loop
test_run_sync_inside_a_running_loop = execution_tests.test_run_sync_inside_a_running_loop
test_waited_callbacks_run_in_the_waiting_task = execution_tests.test_waited_callbacks_run_in_the_waiting_task
# persistence
test_every_change_is_in_the_file_and_reloads = persistence_tests.test_every_change_is_in_the_file_and_reloads
test_in_progress_tasks_are_recovered = persistence_tests.test_in_progress_tasks_are_recovered
test_unserialisable_output_fails_with_a_db = persistence_tests.test_unserialisable_output_fails_with_a_db
test_a_change_is_in_the_file_before_anyone_hears_of_it = (
    persistence_tests.test_a_change_is_in_the_file_before_anyone_hears_of_it
)


def planner(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
    if not ctx.task.dependencies:
        sources = ctx.spawn("retrieval", {"query": input["topic"]}, description="Find sources")
        ctx.add_task("Review", "review", dependencies=[sources])
        raise NeedsDependencies("waiting for the sources")
    return {"article": f"article from {ctx.dependency_outputs()[0]['sources']}", "pid": os.getpid()}


async def retrieval(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"sources": [f"source about {input['query']}"], "pid": os.getpid()}


def review(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
    (found,) = ctx.dependency_outputs()
    return {"review": f"reviewed {found['sources'][0]}"}


def uses_manager(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.manager.add_dependency(ctx.task_id, "x")
    return {}


@pytest.fixture
def agents() -> dagger_nb.TaskAgentRegistry:
    registry = dagger_nb.TaskAgentRegistry()
    for fn, schema in [
        (planner, {"type": "object", "required": ["topic"]}),
        (retrieval, None),
        (review, None),
        (uses_manager, None),
    ]:
        dagger_nb.task_agent(name=fn.__name__, registry=registry, input_schema=schema)(fn)
    return registry


async def test_agents_run_on_workers_and_grow_the_job(dask_client: Any, agents: Any, tmp_path: Path) -> None:
    manager = dagger_nb.TaskManager(tmp_path / "jobs.db", registry=agents, backend=dagger_nb.DaskBackend(dask_client))
    objective = manager.add_objective("job", "Write about bees", "planner", {"topic": "bees"})
    report = await manager.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    tasks = {task.agent: task for task in manager.tasks("job")}
    assert set(tasks) == {"planner", "retrieval", "review"}
    assert all(task.status is TaskStatus.COMPLETED for task in tasks.values())
    assert tasks["retrieval"].parent_task_id == objective and tasks["review"].dependencies == [
        tasks["retrieval"].task_id
    ]
    planner_output = manager.get_task(objective).output.data
    assert planner_output["article"] == "article from ['source about bees']"
    assert planner_output["pid"] != os.getpid() and tasks["retrieval"].output.data["pid"] != os.getpid()
    await manager.aclose()


async def test_schema_rejection_and_manager_access_fail_clearly(dask_client: Any, agents: Any) -> None:
    manager = dagger_nb.TaskManager(registry=agents, backend=dagger_nb.DaskBackend(dask_client))
    bad = manager.add_objective("bad", "no topic", "planner", {})
    remote = manager.add_objective("remote", "reaches for the manager", "uses_manager")
    assert (await manager.run("bad")).status is dagger_nb.JobStatus.FAILED
    assert (await manager.run("remote")).status is dagger_nb.JobStatus.FAILED
    assert "'topic' is a required property" in manager.get_task(bad).status_reason
    assert (
        "ctx.manager is not available to an agent running on a cluster worker" in manager.get_task(remote).status_reason
    )


def test_a_backend_without_invoke_is_refused() -> None:
    with pytest.raises(dagger_nb.TaskError, match="backend must be a Backend"):
        dagger_nb.TaskManager(backend=object())


async def hang_on_attempts(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Hangs on the worker for the first ``input["hangs"]`` attempts (until cancelled there)."""
    if ctx.attempt <= input["hangs"]:
        await asyncio.sleep(3600)
    return {"attempt": ctx.attempt}


def leftover_keys(client: Any, prefix: str) -> list[str]:
    return [key for key in scheduler_keys(client) if key.startswith(prefix)]


async def test_a_timeout_bounds_each_attempt_on_the_cluster(dask_client: Any) -> None:
    registry = dagger_nb.TaskAgentRegistry()
    dagger_nb.task_agent(name="hang_on_attempts", registry=registry)(hang_on_attempts)
    async with dagger_nb.TaskManager(registry=registry) as manager:
        # a second: the attempt's clock covers the round trip to the worker
        recovers = manager.add_task("job", "recovers", "hang_on_attempts", {"hangs": 1}, timeout=1, max_retries=1)
        hangs = manager.add_task("job", "hangs", "hang_on_attempts", {"hangs": 9}, timeout=1)
        report = await manager.run("job")
    assert report.outcomes[recovers].status is TaskStatus.COMPLETED
    assert report.outcomes[recovers].output.data == {"attempt": 2}  # type: ignore[union-attr]
    assert (report.outcomes[hangs].status, report.outcomes[hangs].status_reason) == (
        TaskStatus.FAILED, f"task '{hangs}' timed out after 1s (attempt 1)"
    )
    assert not leftover_keys(dask_client, "hang_on_attempts-")  # the timed-out attempts were cancelled there


async def test_a_stalled_job_is_terminated_and_its_running_agent_cancelled_on_the_cluster(dask_client: Any) -> None:
    registry = dagger_nb.TaskAgentRegistry()
    dagger_nb.task_agent(name="hang_on_attempts", registry=registry)(hang_on_attempts)
    async with dagger_nb.TaskManager(
        registry=registry,
        heartbeat_interval=0.5,
        stall_action=dagger_nb.StallAction.TERMINATE_JOB,
        max_parallel_tasks=1,
    ) as manager:
        hang = {"hangs": 9}
        manager.add_task("job", "running", "hang_on_attempts", hang, task_id="running")
        manager.add_task("job", "waiting", "hang_on_attempts", hang, task_id="waiting", dependencies=["running"])
        handle = manager.start("job")
        report = await handle.wait()
    assert report.status is dagger_nb.JobStatus.FAILED
    reasons = {tid: (task.status, task.status_reason) for tid, task in report.outcomes.items()}
    assert reasons == {tid: (TaskStatus.FAILED, "Job terminated due to inactivity") for tid in ("running", "waiting")}
    stalls = [event for event in handle.events.history if isinstance(event, dagger_nb.JobStalled)]
    assert [(set(stall.stalled_tasks), stall.action) for stall in stalls] == [({"running", "waiting"}, "terminate_job")]
    assert not leftover_keys(dask_client, "hang_on_attempts-")
