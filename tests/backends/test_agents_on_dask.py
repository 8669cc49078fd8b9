"""Task agents on a real Dask cluster: the same jobs, the agents run in worker processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import dagger_nb
from dagger_nb import NeedsDependencies, TaskStatus

pytestmark = pytest.mark.anyio


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
    report = await manager.run_job("job")
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
    assert (await manager.run_job("bad")).status is dagger_nb.JobStatus.FAILED
    assert (await manager.run_job("remote")).status is dagger_nb.JobStatus.FAILED
    assert "'topic' is a required property" in manager.get_task(bad).status_reason
    assert (
        "ctx.manager is not available to an agent running on a cluster worker" in manager.get_task(remote).status_reason
    )


def test_a_backend_without_call_is_refused() -> None:
    with pytest.raises(dagger_nb.TaskError, match="backend must be a DaskBackend"):
        dagger_nb.TaskManager(backend=object())
