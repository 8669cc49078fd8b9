"""Persistence: every change durable, reload after a restart, recovery modes, the process lock, SIGKILL."""

from __future__ import annotations

import json
import json.encoder
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import dagger_nb
from dagger_nb.agents import _attempt

ROOT = Path(__file__).resolve().parents[2]
CRASH_SCRIPT = Path(__file__).with_name("crash_job.py")


def echo_registry() -> dagger_nb.TaskAgentRegistry:
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("echo", lambda input, ctx: input)
    return registry


def stored_statuses(db: Path) -> dict[str, str]:
    """Read task statuses straight from the file, as another process would."""
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute("SELECT task_id, status FROM agent_tasks").fetchall()
    finally:
        connection.close()
    return dict(rows)


def test_every_change_is_in_the_file_and_reloads(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    registry = echo_registry()
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        objective = manager.add_objective("job", "objective", "echo", {"x": 1})
        manager.add_task(
            "job",
            "child",
            "echo",
            {"y": 2},
            task_id="child",
            dependencies=[objective],
            parent=objective,
            task_type=dagger_nb.TaskType.SUBTASK,
            timeout=5,
            max_retries=2,
        )
        assert stored_statuses(db) == {objective: "pending", "child": "pending"}
        report = manager.run_sync("job")
        assert stored_statuses(db) == {objective: "completed", "child": "completed"}
        before = manager.tasks("job")

    with dagger_nb.TaskManager(db, registry=registry) as reopened:
        assert reopened.tasks("job") == before
        assert reopened.job_status("job") is dagger_nb.JobStatus.COMPLETED
        child = reopened.get_task("child")
        assert child is not None and child.task_type is dagger_nb.TaskType.SUBTASK
        assert child.output == report.outcomes["child"].output
        assert reopened.get_dependency_outputs("child") == [{"x": 1}]


@pytest.mark.parametrize(
    ("durability", "status", "reason", "retries"),
    [
        pytest.param(
            "at_least_once",
            "pending",
            "Task was in progress during system restart; running it again",
            1,
            id="at-least-once",
        ),
        pytest.param("at_most_once", "blocked", "Task was in progress during system restart", 0, id="at-most-once"),
    ],
)
def test_in_progress_tasks_are_recovered(
    tmp_path: Path, durability: str, status: str, reason: str, retries: int
) -> None:
    db = tmp_path / "tasks.db"
    registry = echo_registry()
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        manager.add_task("job", "interrupted", "echo", task_id="t")
        manager.update_task_status("t", dagger_nb.TaskStatus.IN_PROGRESS)  # as if the process died mid-attempt

    with dagger_nb.TaskManager(db, registry=registry, durability=durability) as reopened:  # type: ignore[arg-type]
        task = reopened.get_task("t")
        assert task is not None
        assert (task.status, task.status_reason, task.retry_count) == (status, reason, retries)
        assert stored_statuses(db) == {"t": status}
        report = reopened.run_sync("job")
        expected = dagger_nb.JobStatus.COMPLETED if durability == "at_least_once" else dagger_nb.JobStatus.FAILED
        assert report.status is expected


def _cyclic() -> dict:
    output: dict = {}
    output["self"] = output
    return output


@pytest.mark.parametrize(
    ("make_output", "why"),
    [
        (lambda: {"thing": object()}, "Object of type object is not JSON serializable"),
        (lambda: {"tags": {"a", "b"}}, "Object of type set is not JSON serializable"),
        (_cyclic, "it contains itself or nests too deeply"),
    ],
    ids=["object", "set", "cycle"],
)
def test_unserialisable_output_fails_with_a_db(tmp_path: Path, make_output: Callable[[], dict], why: str) -> None:
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("objecty", lambda input, ctx: make_output())
    with dagger_nb.TaskManager(tmp_path / "tasks.db", registry=registry) as manager:
        task_id = manager.add_task("job", "o", "objecty")
        report = manager.run_sync("job")
    assert report.outcomes[task_id].status is dagger_nb.TaskStatus.FAILED
    assert report.outcomes[task_id].status_reason == f"output of agent 'objecty' cannot be stored as JSON: {why}"


def _other_signature(*arguments: Any) -> Any:
    raise TypeError(f"expected 10 arguments, got {len(arguments)}")


@pytest.mark.parametrize(
    "c_make_encoder",
    [
        pytest.param(json.encoder.c_make_encoder, id="this-python"),
        pytest.param(None, id="no-c-encoder"),
        pytest.param(_other_signature, id="other-signature"),
    ],
)
def test_outputs_are_stored_as_json_dumps_writes_them(
    monkeypatch: pytest.MonkeyPatch, c_make_encoder: Callable[..., Any] | None
) -> None:
    output = {"text": "é\n", "values": [1, 2.5, None, False, float("nan")], "nested": {"deep": {"a": []}}}
    expected = json.dumps(output)
    monkeypatch.setattr(json.encoder, "c_make_encoder", c_make_encoder)
    encode = _attempt._json_encoder()
    monkeypatch.undo()  # json's own encoder must work again to be the fallback
    falls_back = getattr(encode, "__func__", None) is json.JSONEncoder.encode
    assert falls_back is (c_make_encoder is not json.encoder.c_make_encoder)
    assert encode(output) == expected
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        encode({"tags": {"a"}})
    with pytest.raises(RecursionError):
        encode(_cyclic())


def test_state_changes_of_a_run_reload_exactly(tmp_path: Path) -> None:
    """A run writes only the state columns of a task; what reloads is the task as it was."""
    db = tmp_path / "tasks.db"
    registry = dagger_nb.TaskAgentRegistry()
    attempts = Counter[str]()

    def flaky(input: dict, ctx: object) -> dict:
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        return {"ok": [1, 2.5, "three", None], "nested": {"a": True}}

    def waits(input: dict, ctx: object) -> dict:
        raise dagger_nb.NeedsDependencies("waiting for a human")

    registry.register("flaky", flaky)
    registry.register("broken", lambda input, ctx: 1 / 0)
    registry.register("waits", waits)
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        good = manager.add_task("job", "retried then ok", "flaky", {"n": 1}, max_retries=1)
        bad = manager.add_task("job", "always fails", "broken")
        after_bad = manager.add_task("job", "never runs", "flaky", dependencies=[bad])
        parked = manager.add_task("job", "blocked by its agent", "waits")
        manager.run_sync("job")
        before = manager.tasks("job")
    assert stored_statuses(db) == {good: "completed", bad: "failed", after_bad: "failed", parked: "blocked"}
    with dagger_nb.TaskManager(db, registry=registry) as reopened:
        assert reopened.tasks("job") == before
        reloaded = {task.task_id: task for task in reopened.tasks("job")}
    assert reloaded[good].retry_count == 1
    assert reloaded[good].output == dagger_nb.TaskOutput(
        success=True, data={"ok": [1, 2.5, "three", None], "nested": {"a": True}}
    )
    assert reloaded[bad].output is not None and reloaded[bad].output.error == reloaded[bad].status_reason
    assert reloaded[after_bad].status_reason == f"dependency {bad} failed"
    assert (reloaded[parked].status_reason, reloaded[parked].output) == ("waiting for a human", None)


def test_statuses_set_after_a_run_reload_with_their_reasons_and_outputs(tmp_path: Path) -> None:
    # A change through the manager rewrites the task's whole row; with and without a
    # reason, and with and without an output, each reloads as it was set.
    db = tmp_path / "tasks.db"
    with dagger_nb.TaskManager(db, registry=echo_registry()) as manager:
        accepted = manager.add_task("job", "accepted", "echo", {"n": 1})
        rejected = manager.add_task("job", "rejected", "echo", {"n": 2})
        blocked = manager.add_task("job", "never run", "echo", {"n": 3})
        manager.update_task_status(blocked, "blocked", "waiting for a human")
        manager.run_sync("job")
        manager.update_task_status(accepted, dagger_nb.TaskStatus.ACCEPTED)
        manager.update_task_status(rejected, dagger_nb.TaskStatus.REJECTED, "not what was asked")
        before = {task.task_id: task for task in manager.tasks("job")}
    with dagger_nb.TaskManager(db, registry=echo_registry()) as reopened:
        after = {task.task_id: task for task in reopened.tasks("job")}
    assert after == before
    assert (after[accepted].status, after[accepted].status_reason) == ("accepted", None)
    assert after[accepted].output == dagger_nb.TaskOutput(success=True, data={"n": 1})
    assert (after[rejected].status, after[rejected].status_reason) == ("rejected", "not what was asked")
    assert after[rejected].output == dagger_nb.TaskOutput(success=True, data={"n": 2})
    assert (after[blocked].status, after[blocked].status_reason, after[blocked].output) == (
        "blocked", "waiting for a human", None,
    )


def test_a_file_from_before_the_state_columns_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    done = dagger_nb.TaskOutput(success=True, data={"x": 1})
    old = dagger_nb.Task(job_id="job", task_id="a", description="done long ago", agent="echo",
                         status=dagger_nb.TaskStatus.COMPLETED, output=done)
    pending = dagger_nb.Task(job_id="job", task_id="b", description="still to do", agent="echo",
                             dependencies=["a"], input={"y": 2})
    connection = sqlite3.connect(db)
    with connection:
        connection.executescript(
            "CREATE TABLE agent_tasks (seq INTEGER PRIMARY KEY, task_id TEXT NOT NULL, job_id TEXT NOT NULL, "
            "status TEXT NOT NULL, data TEXT NOT NULL);"
            "CREATE TABLE agent_jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL);"
        )
        connection.executemany(
            "INSERT INTO agent_tasks VALUES (?, ?, ?, ?, ?)",
            [(0, "a", "job", "completed", old.model_dump_json()),
             (1, "b", "job", "pending", pending.model_dump_json())],
        )
    connection.close()
    with dagger_nb.TaskManager(db, registry=echo_registry()) as manager:
        assert manager.tasks("job") == [old, pending]
        report = manager.run_sync("job")
        assert report.status is dagger_nb.JobStatus.COMPLETED
        finished = manager.tasks("job")
    with dagger_nb.TaskManager(db, registry=echo_registry()) as reopened:
        assert reopened.tasks("job") == finished
        assert reopened.get_dependency_outputs("b") == [{"x": 1}]


def test_every_task_field_is_stored_in_data_or_a_column_of_its_own(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    with dagger_nb.TaskManager(db, registry=echo_registry()) as manager:
        manager.add_task("job", "a", "echo", {"n": 1}, task_id="a")
    connection = sqlite3.connect(db)
    try:
        (data,) = connection.execute("SELECT data FROM agent_tasks").fetchone()
    finally:
        connection.close()
    own_columns = {"status", "status_reason", "retry_count", "updated_at", "output", "created_at"}
    usage = {"tokens", "cost", "models"}  # stored once reported (tests/agents/test_usage.py)
    assert set(json.loads(data)) == set(dagger_nb.Task.model_fields) - own_columns - usage


def test_a_file_from_before_the_creation_time_column_reloads(tmp_path: Path) -> None:
    # the layout of the previous version: state columns, the creation time inside data
    db = tmp_path / "previous.db"
    created = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    task = dagger_nb.Task(job_id="job", task_id="a", description="from before", agent="echo", input={"n": 1},
                          task_type=dagger_nb.TaskType.STORY, created_at=created, updated_at=created)
    data = task.model_dump_json(exclude={"status", "status_reason", "retry_count", "updated_at", "output"})
    connection = sqlite3.connect(db)
    with connection:
        connection.executescript(
            "CREATE TABLE agent_tasks (seq INTEGER PRIMARY KEY, task_id TEXT NOT NULL, job_id TEXT NOT NULL, "
            "status TEXT NOT NULL, data TEXT NOT NULL, status_reason TEXT, retry_count INTEGER, "
            "updated_at_us INTEGER, output TEXT);"
            "CREATE TABLE agent_jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL);"
        )
        connection.execute(
            "INSERT INTO agent_tasks VALUES (0, 'a', 'job', 'pending', ?, NULL, 0, ?, NULL)",
            (data, int(created.timestamp() * 1_000_000)),
        )
    connection.close()
    with dagger_nb.TaskManager(db, registry=echo_registry()) as manager:
        assert manager.tasks("job") == [task]
        assert manager.run_sync("job").success
        finished = manager.tasks("job")
    with dagger_nb.TaskManager(db, registry=echo_registry()) as reopened:
        assert reopened.tasks("job") == finished
        assert finished[0].created_at == created


@pytest.mark.anyio
async def test_a_change_is_in_the_file_before_anyone_hears_of_it(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    heard: list[tuple[str, str, str]] = []
    reader = sqlite3.connect(db)  # another connection, as another process would read the file
    try:
        async with dagger_nb.TaskManager(db, registry=echo_registry(), heartbeat_interval=None) as manager:
            first = manager.add_task("job", "first", "echo", {"n": 1})
            manager.add_task("job", "second", "echo", {"n": 2}, dependencies=[first])
            handle = manager.start("job")

            def check(event: object) -> None:
                if isinstance(event, dagger_nb.TaskStarted | dagger_nb.TaskCompleted):
                    (stored,) = reader.execute(
                        "SELECT status FROM agent_tasks WHERE task_id = ?", (event.task_id,)
                    ).fetchone()
                    heard.append((type(event).__name__, event.task_id, stored))

            handle.events.add_listener(check)
            report = await handle.wait()
        (journal_mode,) = reader.execute("PRAGMA journal_mode").fetchone()
    finally:
        reader.close()

    assert report.success
    assert journal_mode == "wal"
    assert [(kind, stored) for kind, _, stored in heard] == [
        ("TaskStarted", "in_progress"), ("TaskCompleted", "completed"),
    ] * 2


def wait_for_lines(path: Path, count: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Watch another process's side-effect file (polling is the only way to observe it)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"crash job exited early: {process.stderr.read().decode()}")  # type: ignore[union-attr]
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"crash job did not reach {count} agent calls in time")


def test_sigkill_partway_then_resume_runs_no_completed_task_twice(tmp_path: Path) -> None:
    sys.path.insert(0, str(CRASH_SCRIPT.parent))
    try:
        import crash_job
    finally:
        sys.path.remove(str(CRASH_SCRIPT.parent))
    db, effects, hang_after = tmp_path / "crash.db", tmp_path / "effects.txt", 60
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, str(CRASH_SCRIPT), str(db), str(effects), str(hang_after)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_lines(effects, hang_after, process, time.monotonic() + 60)
        with pytest.raises(dagger_nb.DatabaseInUse):
            dagger_nb.TaskManager(db, registry=echo_registry())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()  # type: ignore[union-attr]

    effects_at_crash = Counter(effects.read_text().split())
    at_crash = stored_statuses(db)
    completed_at_crash = {tid for tid, status in at_crash.items() if status == "completed"}
    in_progress_at_crash = {tid for tid, status in at_crash.items() if status == "in_progress"}
    assert len(at_crash) == crash_job.TASKS
    assert 0 < len(completed_at_crash) < crash_job.TASKS
    assert in_progress_at_crash

    registry = dagger_nb.TaskAgentRegistry()

    @dagger_nb.task_agent(name="work", registry=registry)
    async def work(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        with open(effects, "a") as file:
            file.write(f"{ctx.task_id}\n")
        return {"n": input["n"]}

    async def resume() -> dagger_nb.JobReport:
        async with dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None) as manager:
            for task_id in in_progress_at_crash:
                task = manager.get_task(task_id)
                assert task is not None and task.status is dagger_nb.TaskStatus.PENDING and task.retry_count == 1
            return await manager.start("crash").wait()

    report = anyio.run(resume)

    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert len(report.outcomes) == crash_job.TASKS
    assert all(task.status is dagger_nb.TaskStatus.COMPLETED for task in report.outcomes.values())
    assert all(task.output.data == {"n": task.input["n"]} for task in report.outcomes.values())  # type: ignore[union-attr]
    calls = Counter(effects.read_text().split())
    assert set(calls) == set(report.outcomes)
    assert {tid: calls[tid] for tid in completed_at_crash} == dict.fromkeys(completed_at_crash, 1)
    # in progress at the crash: run again (at least once), whether or not the first try got far
    assert {tid: calls[tid] for tid in in_progress_at_crash} == {
        tid: effects_at_crash[tid] + 1 for tid in in_progress_at_crash
    }


@pytest.mark.parametrize(
    ("make_input", "why"),
    [
        (lambda: {"thing": object()}, "Unable to serialize unknown type: <class 'object'>"),
        (lambda: {"me": _cyclic()}, "Error serializing to JSON: ValueError: Circular reference detected (id repeated)"),
    ],
)
def test_input_that_cannot_be_stored_is_refused(tmp_path: Path, make_input: Callable[[], dict], why: str) -> None:
    with dagger_nb.TaskManager(tmp_path / "tasks.db", registry=echo_registry()) as manager:
        with pytest.raises(dagger_nb.TaskError) as caught:
            manager.add_task("job", "bad", "echo", make_input(), task_id="t")
        assert str(caught.value) == f"cannot add task 't' to job 'job': input cannot be stored as JSON: {why}"
        assert manager.tasks() == []


def test_the_creation_time_reloads_exactly(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    with dagger_nb.TaskManager(db, registry=echo_registry()) as manager:
        task_id = manager.add_task("job", "a", "echo", {"n": 1})
        manager.update_task_status(task_id, "blocked", "later")  # a second whole row, later
        before = manager.get_task(task_id)
    assert before is not None and before.created_at < before.updated_at
    with dagger_nb.TaskManager(db, registry=echo_registry()) as reopened:
        after = reopened.get_task(task_id)
    assert after is not None
    assert (after.created_at, after.updated_at) == (before.created_at, before.updated_at)
    assert after.created_at.tzinfo is not None


@pytest.mark.anyio
async def test_changes_on_a_loop_are_committed_together_when_the_step_ends(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    async with dagger_nb.TaskManager(db, registry=echo_registry()) as manager:
        for n in range(3):
            manager.add_task("job", f"t{n}", "echo", task_id=f"t{n}")
        manager.update_task_status("t0", "accepted")
        assert stored_statuses(db) == {}  # one transaction for the whole step, not four
        await anyio.lowlevel.checkpoint()
        assert stored_statuses(db) == {"t0": "accepted", "t1": "pending", "t2": "pending"}


def test_a_change_after_close_is_refused_not_silently_kept_in_memory(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    manager = dagger_nb.TaskManager(db, registry=echo_registry())
    manager.add_task("job", "a", "echo", task_id="a")
    manager.close()
    with pytest.raises(dagger_nb.StorageError, match="cannot write tasks to .*closed database"):
        manager.add_task("job", "b", "echo", task_id="b")
    with pytest.raises(dagger_nb.StorageError):  # reports the change it could not write again
        manager.close()
    with dagger_nb.TaskManager(db, registry=echo_registry()) as reopened:
        assert [task.task_id for task in reopened.tasks("job")] == ["a"]
