"""A damaged or foreign task file is refused with a StorageError naming the file and the row."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import dagger_nb
from dagger_nb.errors import StorageError


def registry() -> dagger_nb.TaskAgentRegistry:
    agents = dagger_nb.TaskAgentRegistry()
    agents.register("echo", lambda input, ctx: input)
    return agents


def healthy_file(db: Path) -> None:
    """Row 0: the objective 'goal' (completed); row 1: 'child' (pending, depends on it)."""
    with dagger_nb.TaskManager(db, registry=registry(), heartbeat_interval=None) as manager:
        manager.add_objective("job", "goal", "echo", {"x": 1}, task_id="goal")
        manager.run_sync("job")
        manager.add_task("job", "child", "echo", {"y": 2}, task_id="child", dependencies=["goal"])


def sql(*statements: str, values: tuple[object, ...] = ()) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        connection = sqlite3.connect(db)
        try:
            for statement in statements:
                connection.execute(statement, values if "?" in statement else ())
            connection.commit()
        finally:
            connection.close()

    return damage


def replace_file(content: bytes) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        db.write_bytes(content)

    return damage


def truncate(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2 + 100])


def foreign_schema(db: Path) -> None:
    db.unlink()
    sql("CREATE TABLE agent_tasks (name TEXT, size REAL)", "INSERT INTO agent_tasks VALUES ('x', 1.5)")(db)


def foreign_view(db: Path) -> None:
    db.unlink()
    sql("CREATE VIEW agent_tasks AS SELECT 1 AS seq")(db)


def drop_field(field: str) -> Callable[[Path], None]:
    return sql(
        f"UPDATE agent_tasks SET data = json_remove(data, '$.{field}') WHERE task_id = 'child'",
    )


CASES = [
    pytest.param(
        sql("UPDATE agent_tasks SET data = '{not json' WHERE task_id = 'child'"),
        r"row 1: data is damaged: Expecting property name",
        id="bad-json-data",
    ),
    pytest.param(
        sql("UPDATE agent_tasks SET data = '[1, 2]' WHERE task_id = 'child'"),
        r"row 1: data is damaged: expected a JSON object, got list",
        id="data-not-an-object",
    ),
    pytest.param(
        sql("UPDATE agent_tasks SET data = 42 WHERE task_id = 'child'"),
        r"row 1: data is damaged: expected a JSON object, got int",
        id="data-a-number",
    ),
    pytest.param(
        sql("UPDATE agent_tasks SET output = '{\"success\": tru' WHERE task_id = 'goal'"),
        r"row 0 \(task 'goal'\): output is damaged",
        id="bad-json-output",
    ),
    pytest.param(
        sql("UPDATE agent_tasks SET output = '{\"success\": \"maybe\"}' WHERE task_id = 'goal'"),
        r"row 0 \(task 'goal'\): output.success: Input should be a valid boolean",
        id="invalid-output",
    ),
    pytest.param(
        sql("UPDATE agent_tasks SET status = 'exploded' WHERE task_id = 'child'"),
        r"row 1 \(task 'child'\): status: Input should be 'pending'",
        id="unknown-task-status",
    ),
    pytest.param(drop_field("agent"), r"row 1 \(task 'child'\): agent: Field required", id="missing-field"),
    pytest.param(
        sql("UPDATE agent_tasks SET updated_at_us = 9000000000000000000 WHERE task_id = 'child'"),
        r"row 1 \(task 'child'\): updated_at_us is damaged",
        id="time-out-of-range",
    ),
    pytest.param(
        sql("UPDATE agent_tasks SET created_at_us = 'soon' WHERE task_id = 'child'"),
        r"row 1 \(task 'child'\): created_at_us is damaged",
        id="time-as-text",
    ),
    pytest.param(
        sql("UPDATE agent_jobs SET status = 'exploded'"),
        r"job 'job' has unknown status 'exploded' \(known: running, completed",
        id="unknown-job-status",
    ),
    pytest.param(
        sql("DELETE FROM agent_tasks WHERE task_id = 'goal'"),
        r"row 1 \(task 'child'\) refers to tasks the file does not hold: 'goal'",
        id="dangling-dependency",
    ),
    pytest.param(
        sql(
            "INSERT INTO agent_tasks (seq, task_id, job_id, status, data) "
            "SELECT 7, task_id, job_id, status, data FROM agent_tasks WHERE task_id = 'child'"
        ),
        r"row 7: task id 'child' is also row 1",
        id="duplicate-task",
    ),
    pytest.param(foreign_schema, r"no such column: seq", id="foreign-schema"),
    pytest.param(foreign_view, r"cannot open tasks in .*: Cannot add a column to a view", id="foreign-view"),
    pytest.param(replace_file(b"this is not a database, " * 200), r"file is not a database", id="not-sqlite"),
    pytest.param(truncate, r"malformed|not a database", id="truncated"),
    pytest.param(replace_file(b""), None, id="empty-file-is-a-new-database"),
]


@pytest.mark.parametrize(("damage", "message"), CASES)
def test_a_damaged_file_is_refused_with_storage_error(
    tmp_path: Path, damage: Callable[[Path], None], message: str | None
) -> None:
    db = tmp_path / "tasks.db"
    healthy_file(db)
    damage(db)
    if message is None:
        with dagger_nb.TaskManager(db, registry=registry(), heartbeat_interval=None) as manager:
            assert manager.jobs() == []
        return
    for _ in range(2):  # the first refusal released the file: the second fails the same way
        with pytest.raises(StorageError) as refused:
            dagger_nb.TaskManager(db, registry=registry(), heartbeat_interval=None)
        assert str(db) in str(refused.value)
        assert re.search(message, str(refused.value)), str(refused.value)
        assert not isinstance(refused.value, dagger_nb.DatabaseInUse)
