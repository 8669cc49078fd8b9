"""Building jobs: task creation, validation errors, queries, frames and DOT."""

from __future__ import annotations

import dataclasses
import random
import re
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

import dagger_nb
from dagger_nb.agents.model import Task, TaskRecord, TaskType, new_task, snapshot
from dagger_nb.graph import dot_available, quote


@pytest.fixture
def manager(registry: dagger_nb.TaskAgentRegistry) -> dagger_nb.TaskManager:
    for name in ("planner", "writer", "echo"):
        registry.register(name, lambda input, ctx: input)
    return dagger_nb.TaskManager(registry=registry)


def test_hierarchy_and_types_are_stored(manager: dagger_nb.TaskManager) -> None:
    objective = manager.add_objective("job", "Write a report", "planner", {"topic": "bees"})
    story = manager.add_story("job", "Research", "planner", parent=objective)
    task = manager.add_task("job", "Find sources", "echo", parent=story, task_id="sources")
    sub = manager.add_task("job", "Read one", "echo", parent=task, task_type=dagger_nb.TaskType.SUBTASK)

    assert task == "sources"
    assert [t.task_type for t in manager.tasks("job")] == [
        dagger_nb.TaskType.OBJECTIVE,
        dagger_nb.TaskType.STORY,
        dagger_nb.TaskType.TASK,
        dagger_nb.TaskType.SUBTASK,
    ]
    stored = manager.get_task(sub)
    assert stored is not None
    assert stored.parent_task_id == "sources"
    assert stored.status is dagger_nb.TaskStatus.PENDING
    assert stored.status == "pending"
    objective_task = manager.get_objective("job")
    assert objective_task is not None and objective_task.input == {"topic": "bees"}
    assert manager.get_task("missing") is None
    assert manager.jobs() == ["job"]


def test_generated_ids_are_unique(manager: dagger_nb.TaskManager) -> None:
    ids = {manager.add_task("job", f"t{n}", "echo") for n in range(50)}
    assert len(ids) == 50


def test_generated_ids_do_not_follow_the_notebooks_random_seed(manager: dagger_nb.TaskManager) -> None:
    # a notebook that seeds random at the top must not regenerate ids its database already holds
    random.seed(42)
    first = manager.add_task("job", "a", "echo")
    random.seed(42)
    assert manager.add_task("job", "b", "echo") != first


NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PLAIN = {
    "description": "d", "agent": "echo", "input": {"n": 1, "nested": {"a": [1]}}, "dependencies": ["up"],
    "parent": None, "task_type": TaskType.TASK, "timeout": None, "max_retries": 0, "acceptance_criteria": None,
}


def test_the_manager_record_has_exactly_the_task_fields() -> None:
    assert [field.name for field in dataclasses.fields(TaskRecord)] == list(Task.model_fields)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="plain"),
        pytest.param({"parent": "p", "acceptance_criteria": "ok", "timeout": 2.5, "max_retries": 3}, id="every-field"),
        pytest.param({"task_type": "subtask"}, id="type-as-text"),
        pytest.param({"timeout": 5}, id="int-timeout"),
        pytest.param({"description": TaskType.STORY}, id="str-subclass"),
    ],
)
def test_new_task_equals_the_validated_model(changes: dict) -> None:
    arguments = {**PLAIN, **changes}
    record = new_task("job", "t", now=NOW, **arguments)
    built = snapshot(record)
    expected = Task(
        job_id="job", task_id="t", created_at=NOW, updated_at=NOW, parent_task_id=arguments.pop("parent"), **arguments
    )
    assert built == expected
    assert {name: type(value) for name, value in built} == {name: type(value) for name, value in expected}
    assert record.input is not PLAIN["input"]  # copied, as pydantic copies it


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"timeout": -1.0}, r"timeout\n  Input should be greater than 0", id="negative"),
        pytest.param({"timeout": float("nan")}, r"timeout\n  Input should be greater than 0", id="nan"),
        pytest.param({"input": {1: "x"}}, r"input\.1\.\[key\]\n  Input should be a valid string", id="int-key"),
        pytest.param({"dependencies": [None]}, r"dependencies\.0\n  Input should be a valid string", id="dependency"),
        pytest.param({"task_type": "epic"}, r"task_type\n  Input should be", id="type"),
    ],
)
def test_new_task_rejects_what_the_model_rejects(changes: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        new_task("job", "t", now=NOW, **{**PLAIN, **changes})


def test_the_input_is_copied_when_added(manager: dagger_nb.TaskManager) -> None:
    payload = {"n": 1}
    task_id = manager.add_task("job", "a", "echo", payload)
    payload["n"] = 2
    task = manager.get_task(task_id)
    assert task is not None and task.input == {"n": 1}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"job_id": ""}, dagger_nb.TaskError, "job id must not be empty", id="empty-job"),
        pytest.param(
            {"task_id": "first"},
            dagger_nb.TaskError,
            "task id 'first' already exists \\(in job 'job'\\)",
            id="duplicate-id",
        ),
        pytest.param(
            {"task_id": "me", "dependencies": ["me"]},
            dagger_nb.TaskError,
            "task 'me' cannot depend on itself",
            id="self-dependency",
        ),
        pytest.param(
            {"dependencies": ["ghost"]},
            dagger_nb.TaskError,
            "unknown dependency 'ghost'",
            id="unknown-dependency",
        ),
        pytest.param(
            {"dependencies": ["other-job-task"]},
            dagger_nb.TaskError,
            "dependency 'other-job-task' belongs to another job \\('other'\\)",
            id="cross-job",
        ),
        pytest.param({"parent": "ghost"}, dagger_nb.TaskError, "unknown parent task 'ghost'", id="unknown-parent"),
        pytest.param(
            {"agent": "nobody"},
            dagger_nb.AgentNotFound,
            "unknown agent 'nobody' \\(registered: echo, planner, writer\\)",
            id="unknown-agent",
        ),
        pytest.param({"timeout": -1}, dagger_nb.TaskError, r"timeout: Input should be greater than 0", id="timeout"),
        pytest.param(
            {"max_retries": -1},
            dagger_nb.TaskError,
            "max_retries must be a whole number from 0 to 1,000, got -1",
            id="retries",
        ),
        pytest.param(
            {"max_retries": 1001},
            dagger_nb.TaskError,
            "max_retries must be a whole number from 0 to 1,000, got 1001",
            id="retries-above-bound",
        ),
        pytest.param(
            {"max_retries": 10**30},
            dagger_nb.TaskError,
            "max_retries must be a whole number from 0 to 1,000, got 1000000000000000000000000000000",
            id="retries-huge",
        ),
        pytest.param(
            {"timeout": True},
            dagger_nb.TaskError,
            "timeout must be a number of seconds \\(or None\\), got True",
            id="timeout-boolean",
        ),
        pytest.param(
            {"max_retries": True},
            dagger_nb.TaskError,
            "max_retries must be a whole number from 0 to 1,000, got True",
            id="retries-boolean",
        ),
    ],
)
def test_add_task_errors_name_the_problem(
    manager: dagger_nb.TaskManager, kwargs: dict, error: type[Exception], message: str
) -> None:
    manager.add_task("job", "first", "echo", task_id="first")
    manager.add_task("other", "elsewhere", "echo", task_id="other-job-task")
    arguments = {"job_id": "job", "description": "new", "agent": "echo", **kwargs}
    job_id, description, agent = arguments.pop("job_id"), arguments.pop("description"), arguments.pop("agent")
    with pytest.raises(error, match=message):
        manager.add_task(job_id, description, agent, **arguments)
    assert len(manager.tasks()) == 2


def test_several_problems_are_reported_together(manager: dagger_nb.TaskManager) -> None:
    with pytest.raises(dagger_nb.TaskError) as caught:
        manager.add_task("job", "x", "echo", task_id="x", dependencies=["x", "ghost"], parent="nobody")
    assert str(caught.value) == (
        "cannot add task 'x' to job 'job': task 'x' cannot depend on itself; unknown dependency 'ghost'; "
        "unknown parent task 'nobody'"
    )


def test_dependency_closing_a_cycle_lists_it(manager: dagger_nb.TaskManager) -> None:
    manager.add_task("job", "a", "echo", task_id="a")
    manager.add_task("job", "b", "echo", task_id="b", dependencies=["a"])
    manager.add_task("job", "c", "echo", task_id="c", dependencies=["b"])
    with pytest.raises(dagger_nb.DependencyCycleError, match="dependency cycle: a -> c -> b -> a") as caught:
        manager.add_dependency("a", "c")
    assert caught.value.cycle == ["a", "c", "b", "a"]
    with pytest.raises(dagger_nb.TaskError, match="task 'a' cannot depend on itself"):
        manager.add_dependency("a", "a")
    with pytest.raises(dagger_nb.TaskError, match="unknown task 'ghost'"):
        manager.add_dependency("a", "ghost")
    manager.add_dependency("c", "a")
    assert manager.get_task("c").dependencies == ["b", "a"]  # type: ignore[union-attr]


def test_update_status_and_unknown_status(manager: dagger_nb.TaskManager) -> None:
    manager.add_task("job", "a", "echo", task_id="a")
    manager.update_task_status("a", dagger_nb.TaskStatus.ACCEPTED, "looks good")
    task = manager.get_task("a")
    assert task is not None and task.status is dagger_nb.TaskStatus.ACCEPTED
    assert task.status_reason == "looks good"
    manager.update_task_status("a", "rejected")
    assert manager.get_task("a").status is dagger_nb.TaskStatus.REJECTED  # type: ignore[union-attr]
    with pytest.raises(dagger_nb.TaskError, match="unknown task status 'done' \\(known: pending, in_progress"):
        manager.update_task_status("a", "done")
    with pytest.raises(dagger_nb.TaskError, match="unknown task 'zzz'"):
        manager.update_task_status("zzz", "pending")


def test_dependency_outputs_name_unfinished_dependencies(manager: dagger_nb.TaskManager) -> None:
    manager.add_task("job", "a", "echo", task_id="a")
    manager.add_task("job", "b", "echo", task_id="b")
    manager.add_task("job", "c", "echo", task_id="c", dependencies=["a", "b"])
    manager.update_task_status("a", "accepted")
    with pytest.raises(dagger_nb.TaskError, match="task 'c': dependencies not completed: 'b' \\(pending\\)"):
        manager.get_dependency_outputs("c")


def test_snapshots_do_not_leak_changes(manager: dagger_nb.TaskManager) -> None:
    manager.add_task("job", "a", "echo", {"k": [1]}, task_id="a")
    snapshot = manager.get_task("a")
    assert snapshot is not None
    snapshot.input["k"].append(2)
    snapshot.dependencies.append("x")
    assert manager.get_task("a").input == {"k": [1]}  # type: ignore[union-attr]
    assert manager.get_task("a").dependencies == []  # type: ignore[union-attr]


def test_a_report_keeps_every_task_as_it_was_when_the_job_ended(manager: dagger_nb.TaskManager) -> None:
    manager.add_task("job", "a", "echo", {"k": [1]}, task_id="a")
    manager.add_task("job", "b", "echo", task_id="b", dependencies=["a"])
    report = manager.run_sync("job")
    at_the_end = manager.tasks("job")
    manager.update_task_status("a", "rejected", "not what was asked")
    manager.add_task("job", "c", "echo", task_id="c")
    manager.add_dependency("b", "c")
    assert list(report.outcomes) == ["a", "b"] and len(report.outcomes) == 2
    assert report.outcomes == {task.task_id: task for task in at_the_end}
    assert (report.outcomes["a"].status, report.outcomes["b"].dependencies) == ("completed", ["a"])
    assert report.outcomes["a"] is report.outcomes["a"]  # made once, then kept
    report.outcomes["a"].input["k"] = [2]
    report.outcomes["a"].dependencies.append("x")  # a's list, unlike b's, was never replaced
    assert report.outcomes["a"].input == {"k": [2]}  # the report's own copy changed ...
    assert manager.get_task("a").input == {"k": [1]}  # type: ignore[union-attr]  # ... not the task
    assert manager.get_task("a").dependencies == []  # type: ignore[union-attr]
    assert "a" in report.outcomes and "c" not in report.outcomes
    assert "'a': Task(" in repr(report.outcomes)
    assert report.counts() == {dagger_nb.TaskStatus.COMPLETED: 2}


def test_tasks_frame_has_one_row_per_task_and_flat_columns(manager: dagger_nb.TaskManager) -> None:
    objective = manager.add_objective("job", "o", "planner", {"topic": "bees"})
    manager.add_task("job", "t", "echo", task_id="t", dependencies=[objective], parent=objective)
    manager.add_task("other", "x", "echo")
    frame = manager.tasks_frame("job")
    assert list(frame.columns) == [
        "job_id",
        "task_id",
        "parent_task_id",
        "task_type",
        "description",
        "acceptance_criteria",
        "agent",
        "status",
        "status_reason",
        "dependencies",
        "input",
        "output",
        "error",
        "timeout",
        "max_retries",
        "retry_count",
        "created_at",
        "updated_at",
        "summary",
        "tokens",
        "cost",
        "models",
    ]
    assert len(frame) == 2
    assert list(frame["status"]) == ["pending", "pending"]
    assert list(frame["task_type"]) == ["objective", "task"]
    row = frame.iloc[1]
    assert (row["dependencies"], row["parent_task_id"], row["input"]) == (objective, objective, "{}")
    assert frame.iloc[0]["input"] == '{"topic": "bees"}'
    for column in frame.columns:  # plain values only: text, numbers, times, missing
        for value in frame[column]:
            assert value is None or type(value).__name__ in {"str", "int", "float", "Timestamp", "NaTType"}, (
                column,
                value,
            )
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert len(manager.tasks_frame()) == 3
    with pytest.raises(dagger_nb.TaskError, match="unknown job 'nope' \\(known: job, other\\)"):
        manager.tasks_frame("nope")


def test_manager_options_are_checked(registry: dagger_nb.TaskAgentRegistry) -> None:
    with pytest.raises(dagger_nb.TaskError, match="max_parallel_tasks must be at least 1"):
        dagger_nb.TaskManager(registry=registry, max_parallel_tasks=0)
    with pytest.raises(dagger_nb.TaskError, match="durability must be 'at_least_once' or 'at_most_once'"):
        dagger_nb.TaskManager(registry=registry, durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(dagger_nb.TaskError, match="heartbeat_interval must be positive"):
        dagger_nb.TaskManager(registry=registry, heartbeat_interval=0)


NASTY = 'say "hi" <b>&amp;</b>\nnext line \\ end'


def test_dot_graph_colours_edges_and_hierarchy(manager: dagger_nb.TaskManager) -> None:
    objective = manager.add_objective("job", "Objective", "planner", task_id="obj")
    manager.add_task("job", "done", "echo", task_id="done", parent=objective)
    manager.add_task("job", NASTY, "echo", task_id='we"ird<id>', dependencies=["done"], parent=objective)
    for task_id, status in [("done", "completed"), ("obj", "in_progress")]:
        manager.update_task_status(task_id, status)
    dot = manager.to_dot("job")
    assert dot.startswith('digraph "job" {')
    assert '"done" [label="done\\necho · completed", tooltip="done", fillcolor="#9be29b"];' in dot
    assert 'fillcolor="#d9d9d9"' in dot  # pending is grey
    assert 'fillcolor="#8ab4f8"' in dot  # in progress is blue
    assert '"done" -> "we\\"ird<id>";' in dot
    assert '"obj" -> "done" [style="dashed", arrowhead="none", color="#888888"];' in dot
    assert quote(NASTY)[1:-1] in dot  # every piece of text goes through the shared DOT quoting


#: The issue's colour for each status: green, red, blue, orange, grey, purple, brown.
STATUS_FILL = {
    dagger_nb.TaskStatus.COMPLETED: "#9be29b",
    dagger_nb.TaskStatus.FAILED: "#f28b82",
    dagger_nb.TaskStatus.IN_PROGRESS: "#8ab4f8",
    dagger_nb.TaskStatus.BLOCKED: "#fbbc66",
    dagger_nb.TaskStatus.PENDING: "#d9d9d9",
    dagger_nb.TaskStatus.ACCEPTED: "#c58af9",
    dagger_nb.TaskStatus.REJECTED: "#a0522d",
}


def test_dot_graph_colours_every_status(manager: dagger_nb.TaskManager) -> None:
    assert set(STATUS_FILL) == set(dagger_nb.TaskStatus)
    for status in dagger_nb.TaskStatus:
        manager.add_task("job", str(status), "echo", task_id=f"t-{status}")
        manager.update_task_status(f"t-{status}", status)
    dot = manager.to_dot("job")
    for status, fill in STATUS_FILL.items():
        line = next(line for line in dot.splitlines() if line.strip().startswith(f'"t-{status}" ['))
        assert f'fillcolor="{fill}"' in line, (status, line)


def test_dot_graph_of_all_jobs_uses_clusters(manager: dagger_nb.TaskManager) -> None:
    manager.add_task("a", "one", "echo")
    manager.add_task("b", "two", "echo")
    dot = manager.to_dot()
    assert len(re.findall(r'subgraph "cluster_', dot)) == 2
    with pytest.raises(dagger_nb.TaskError, match="unknown job 'c'"):
        manager.to_dot("c")


@pytest.mark.skipif(not dot_available(), reason="Graphviz dot is not installed")
def test_dot_graph_with_nasty_text_renders(manager: dagger_nb.TaskManager) -> None:
    manager.add_task("job", NASTY, "echo", task_id="<img src=x onerror=alert(1)>")
    svg = dagger_nb.render_svg(manager.to_dot("job"))
    assert "&lt;img src=x onerror=alert(1)&gt;" in svg


def test_a_report_gives_the_objectives_result_and_escaped_html() -> None:
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("echo", lambda input, ctx: {"essay": input["text"]})
    registry.register("fails", lambda input, ctx: 1 / 0)
    with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        manager.add_objective("job", "<b>write</b>", "echo", {"text": "<script>alert(1)</script>"}, task_id="<goal>")
        manager.add_task("job", "a side task", "echo", {"text": "side"})
        report = manager.run_sync("job")
        manager.add_objective("broken", "never", "fails")
        broken = manager.run_sync("broken")
    assert report.result == {"essay": "<script>alert(1)</script>"}
    assert report.objective is not None and report.objective.task_id == "<goal>"
    assert broken.result is None  # the objective did not complete
    page = report._repr_html_()
    assert "<script>" not in page and "<b>write" not in page and "<goal>" not in page
    assert "&lt;b&gt;write&lt;/b&gt;" in page and "&lt;goal&gt;" in page
    assert "job job</b>: " in page and ">completed</span> (2 completed)" in page
    assert "ZeroDivisionError: division by zero" in broken._repr_html_()
    frame = report.to_frame()
    assert frame.loc[frame["task_id"] == "<goal>", "output"].item() == '{"essay": "<script>alert(1)</script>"}'
    assert broken.to_frame()["error"].item() == "ZeroDivisionError: division by zero"

