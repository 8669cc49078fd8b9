"""TaskSpec is the one list of add-task options; one task-id scheme; specific error classes."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest

import dagger_nb
from dagger_nb.agents import ChildTask, TaskSpec
from dagger_nb.agents.context import ChildTask as ChildTaskFromContext
from dagger_nb.agents.spec import OPTION_NAMES
from dagger_nb.errors import AgentError, JobNotFound, TaskNotFound

pytestmark = pytest.mark.anyio

ID = re.compile(r"task-[0-9a-f]{12}")


class PicklingBackend:
    """Runs agents here, but as a cluster backend would: the context crosses a pickle both ways."""

    async def invoke(self, runner: Any, kwargs: Any = None, *, args: tuple, **_: Any) -> Any:
        fn, payload, ctx = args
        ctx = pickle.loads(pickle.dumps(ctx))
        outcome = await runner.fn(fn, payload, ctx) if runner.is_async else runner.fn(fn, payload, ctx)
        return pickle.loads(pickle.dumps(outcome))


def test_the_options_are_the_fields_of_task_spec() -> None:
    assert OPTION_NAMES == (
        "dependencies", "parent", "task_type", "task_id", "timeout", "max_retries", "acceptance_criteria",
    )
    spec = TaskSpec(description="d", agent="a", timeout=2, max_retries=1)
    assert spec.options()["timeout"] == 2.0 and spec.options()["max_retries"] == 1
    assert ChildTask is ChildTaskFromContext and issubclass(ChildTask, TaskSpec)


def test_an_unknown_option_is_named_with_the_known_ones(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="echo", registry=registry)
    async def echo(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        return input

    manager = dagger_nb.TaskManager(registry=registry)
    with pytest.raises(dagger_nb.TaskError) as caught:
        manager.add_task("job", "x", "echo", timout=3, retries=1)
    assert str(caught.value) == (
        "add_task() got unknown option(s) 'timout', 'retries' (known: dependencies, parent, task_type, task_id, "
        "timeout, max_retries, acceptance_criteria)"
    )
    assert manager.jobs() == []


@pytest.mark.parametrize("where", ["here", "on a worker"])
async def test_agents_add_tasks_with_the_same_options_and_id_scheme(
    registry: dagger_nb.TaskAgentRegistry, where: str
) -> None:
    errors: list[str] = []

    @dagger_nb.task_agent(name="leaf", registry=registry)
    async def leaf(input: dict, ctx: Any) -> dict:
        return {}

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: Any) -> dict:
        try:
            ctx.add_task("bad", "leaf", colour="red")
        except dagger_nb.TaskError as error:
            errors.append(str(error))
        ctx.add_task("named", "leaf", task_id="named", max_retries=2, acceptance_criteria="done", timeout=5)
        ctx.add_task("generated", "leaf", dependencies=["named"], parent=None)
        return {}

    backend = PicklingBackend() if where == "on a worker" else None
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, backend=backend) as manager:
        goal = manager.add_objective("job", "plan", "planner")
        report = await manager.run("job")
        named = manager.get_task("named")
        generated = next(task for task in manager.tasks("job") if task.description == "generated")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert errors == [
        "add_task() got unknown option(s) 'colour' (known: dependencies, parent, task_type, task_id, timeout, "
        "max_retries, acceptance_criteria)"
    ]
    assert ID.fullmatch(goal) and ID.fullmatch(generated.task_id)  # one scheme, here and on a worker
    assert named is not None
    assert (named.parent_task_id, named.max_retries, named.acceptance_criteria, named.timeout) == (goal, 2, "done", 5)
    assert (generated.parent_task_id, generated.dependencies) == (None, ["named"])


async def test_a_delegated_child_cannot_set_its_own_id_or_parent(registry: dagger_nb.TaskAgentRegistry) -> None:
    errors: list[str] = []

    @dagger_nb.task_agent(name="planner", registry=registry)
    async def planner(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        try:
            ctx.delegate({"a": {"agent": "planner", "task_id": "mine", "parent": None}})
        except dagger_nb.TaskError as error:
            errors.append(str(error))
        return {}

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        manager.add_objective("job", "plan", "planner")
        await manager.run("job")
    assert len(errors) == 1
    assert errors[0].startswith("delegated child 'a': ")
    assert "task_id and parent of a delegated child are set by delegate()" in errors[0]


def test_lookups_that_fail_raise_key_errors_that_are_still_task_errors(registry: dagger_nb.TaskAgentRegistry) -> None:
    manager = dagger_nb.TaskManager(registry=registry)
    with pytest.raises(TaskNotFound) as task_missing:
        manager.add_dependency("ghost", "other")
    assert isinstance(task_missing.value, KeyError) and isinstance(task_missing.value, dagger_nb.TaskError)
    assert (str(task_missing.value), task_missing.value.task_id) == ("unknown task 'ghost'", "ghost")
    with pytest.raises(JobNotFound) as job_missing:
        manager.tasks("nope")
    assert isinstance(job_missing.value, KeyError) and isinstance(job_missing.value, dagger_nb.TaskError)
    assert str(job_missing.value) == "unknown job 'nope' (known: none)"
    for lookup in (manager.job_usage, manager.job_status, manager.to_dot, manager.tasks_frame, manager.run_sync):
        with pytest.raises(JobNotFound, match="unknown job 'nope'"):
            lookup("nope")


async def test_an_agent_breaking_the_convention_raises_agent_error(registry: dagger_nb.TaskAgentRegistry) -> None:
    seen: list[BaseException] = []

    @dagger_nb.task_agent(name="listy", registry=registry)
    async def listy(input: dict, ctx: Any) -> Any:
        try:
            ctx.manager  # noqa: B018  # not available on a worker
        except dagger_nb.DaggerError as error:
            seen.append(error)
        return [1, 2]

    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None, backend=PicklingBackend()) as manager:
        task = manager.add_task("job", "list", "listy")
        report = await manager.run("job")
    assert [type(error) for error in seen] == [AgentError]
    assert report.outcomes[task].status_reason == "agent 'listy' returned list, expected a dict"
