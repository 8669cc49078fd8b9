"""Text that is not valid Unicode (a lone surrogate, as ``os.fsdecode`` makes of a stray byte in
a file name) in what an agent raises, returns or reports never escapes as a raw serialisation
error: error text is stored with the surrogate escaped, an output that holds one fails its task
with a clear error naming it, and a write that still meets one raises StorageError naming the
file and the task."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import dagger_nb
from dagger_nb.agents.model import TaskRecord
from dagger_nb.agents.store import TaskStore

STRAY = os.fsdecode(b"\xff")  # '\udcff'


def reopened_task(db: Path, registry: dagger_nb.TaskAgentRegistry, task_id: str) -> dagger_nb.Task:
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        task = manager.get_task(task_id)
    assert task is not None
    return task


def test_an_error_text_with_a_lone_surrogate_is_stored_escaped(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry
) -> None:
    def bad(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        raise ValueError("bad " + STRAY)

    registry.register("bad", bad)
    db = tmp_path / "tasks.db"
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        manager.add_objective("job", "x", "bad", task_id="goal")
        report = manager.run_sync("job")
    assert report.status is dagger_nb.JobStatus.FAILED
    task = reopened_task(db, registry, "goal")
    assert task.status is dagger_nb.TaskStatus.FAILED
    assert task.output is not None and task.output.error == "ValueError: bad \\udcff"
    assert task.output.error.encode("utf-8")  # printable as it is
    assert task.output.traceback is None or "\\udcff" in task.output.traceback


@pytest.mark.parametrize("output", [{"k" + STRAY: 1}, {"k": "v" + STRAY}, {"k": [{"deep": STRAY}]}])
def test_an_output_with_a_lone_surrogate_fails_its_task_naming_it(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry, output: dict[str, Any]
) -> None:
    registry.register("out", lambda input, ctx: output)
    registry.register("fine", lambda input, ctx: {"emoji": "\U0001f600"})  # a surrogate pair in JSON: fine
    db = tmp_path / "tasks.db"
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        manager.add_objective("job", "x", "out", task_id="goal")
        manager.add_task("job", "y", "fine", task_id="smile")
        report = manager.run_sync("job")
        error = manager.get_task("goal").output.error  # type: ignore[union-attr]
    assert report.status is dagger_nb.JobStatus.FAILED
    assert error is not None
    assert "task 'goal': output of agent 'out' cannot be stored: it holds text that is not valid Unicode" in error
    assert "\\udcff" in error
    assert reopened_task(db, registry, "goal").output.error == error  # type: ignore[union-attr]
    assert reopened_task(db, registry, "smile").output.data == {"emoji": "\U0001f600"}  # type: ignore[union-attr]


def test_a_reason_with_a_lone_surrogate_is_stored_escaped(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry
) -> None:
    def wait(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        raise dagger_nb.NeedsDependencies("waiting for " + STRAY)

    registry.register("wait", wait)
    registry.register("echo", lambda input, ctx: input)
    db = tmp_path / "tasks.db"
    with dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None) as manager:
        manager.add_objective("job", "x", "wait", task_id="goal")
        manager.add_task("job", "y", "echo", task_id="other")
        manager.update_task_status("other", "blocked", "held by " + STRAY)
        manager.run_sync("job")
    assert reopened_task(db, registry, "goal").status_reason == "waiting for \\udcff"
    assert reopened_task(db, registry, "other").status_reason == "held by \\udcff"


def test_usage_with_a_model_name_that_is_not_valid_unicode_is_refused(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry
) -> None:
    def report(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ctx.record_usage(10, model="gpt" + STRAY)
        return {}

    registry.register("report", report)
    with dagger_nb.TaskManager(tmp_path / "tasks.db", registry=registry) as manager:
        manager.add_objective("job", "x", "report", task_id="goal")
        assert manager.run_sync("job").status is dagger_nb.JobStatus.FAILED
        error = manager.get_task("goal").output.error  # type: ignore[union-attr]
    assert error is not None and "model must be valid Unicode text" in error


def test_a_write_that_meets_unencodable_text_raises_storage_error_naming_file_and_task(tmp_path: Path) -> None:
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("echo", lambda input, ctx: input)
    db = tmp_path / "tasks.db"
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        manager.add_objective("job", "x", "echo", task_id="goal")
        record = TaskRecord.of(manager.get_task("goal"))  # type: ignore[arg-type]
    store = TaskStore(db)
    try:
        record.status_reason = "held by " + STRAY  # as if a reason had slipped past the manager
        with pytest.raises(dagger_nb.StorageError, match=r"cannot write tasks to '.*tasks\.db': task 'goal'"):
            store.save([(1, record)])
        record.status_reason = None
        record.description = "about " + STRAY
        with pytest.raises(dagger_nb.StorageError, match=r"'.*tasks\.db': task 'goal' cannot be stored as JSON"):
            store.save([(1, record)])
    finally:
        store.close()
