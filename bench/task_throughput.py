"""Task manager throughput against a raw SQLite floor, measured in the same run.

Shapes: ``wide`` (2,000 independent trivial tasks) and ``chain`` (500 tasks,
each depending on the previous one). Each is run by a ``TaskManager`` with a
database on a temporary file (tasks added, then the job run, all timed) and,
for the wide shape, by an in-memory manager. The floor is raw ``sqlite3`` with
the same pragmas doing, per task, the three single-row committed transactions
a task needs (insert it pending, update it in progress, update it completed).

Targets: with a database >= 0.5x the floor on both shapes; in memory >= 10,000
tasks/s on the wide shape. Run with ``python bench/task_throughput.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dagger_nb.agents import TaskAgentRegistry, TaskManager, task_agent
from dagger_nb.agents.model import Task, TaskOutput, TaskStatus
from dagger_nb.storage import open_database

FLOOR_SCHEMA = "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, data TEXT NOT NULL);"


def make_registry() -> TaskAgentRegistry:
    registry = TaskAgentRegistry()

    @task_agent(name="trivial", registry=registry)
    async def trivial(input: dict, ctx: object) -> dict:
        return {"n": input["n"] + 1}

    return registry


def run_manager(shape: str, count: int, db: Path | None) -> float:
    """Seconds to add ``count`` tasks of ``shape`` and run the job to completion."""
    registry = make_registry()
    manager = TaskManager(db, registry=registry, heartbeat_interval=None)
    try:
        start = time.perf_counter()
        previous: str | None = None
        for n in range(count):
            deps = (previous,) if shape == "chain" and previous is not None else ()
            previous = manager.add_task("bench", f"task {n}", "trivial", {"n": n}, dependencies=deps)
        report = manager.run_job_sync("bench")
        elapsed = time.perf_counter() - start
        assert report.success, report
        assert len(report.outcomes) == count
    finally:
        manager.close()
    return elapsed


def run_floor(count: int, db: Path) -> float:
    """Seconds for raw sqlite3 to do ``count`` x 3 single-row committed transactions."""
    connection = open_database(db, schema=FLOOR_SCHEMA)
    task = Task(job_id="bench", task_id="t", description="task", agent="trivial", input={"n": 0})
    pending = task.model_dump_json()
    running = task.model_copy(update={"status": TaskStatus.IN_PROGRESS}).model_dump_json()
    done = task.model_copy(
        update={"status": TaskStatus.COMPLETED, "output": TaskOutput(success=True, data={"n": 1})}
    ).model_dump_json()
    try:
        start = time.perf_counter()
        for n in range(count):
            task_id = f"task-{n}"
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO tasks VALUES (?, ?)", (task_id, pending))
            connection.execute("COMMIT")
            for data in (running, done):
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("UPDATE tasks SET data = ? WHERE task_id = ?", (data, task_id))
                connection.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs (default 3)")
    args = parser.parse_args()
    shapes = {"wide": 2000, "chain": 500}
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(f"{'shape':<7}{'tasks':>7}{'floor t/s':>12}{'db t/s':>10}{'ratio':>8}{'memory t/s':>12}")
        for shape, count in shapes.items():
            floor = min(run_floor(count, root / f"floor-{shape}-{i}.db") for i in range(args.repeats))
            with_db = min(run_manager(shape, count, root / f"db-{shape}-{i}.db") for i in range(args.repeats))
            memory = min(run_manager(shape, count, None) for _ in range(args.repeats))
            ratio = floor / with_db
            print(
                f"{shape:<7}{count:>7}{count / floor:>12,.0f}{count / with_db:>10,.0f}"
                f"{ratio:>7.2f}x{count / memory:>12,.0f}"
            )
            ok &= ratio >= 0.5
            if shape == "wide":
                ok &= count / memory >= 10_000
    print(
        "targets: db >= 0.5x floor on both shapes, memory >= 10,000 tasks/s on wide:",
        "met" if ok else "MISSED",
    )


if __name__ == "__main__":
    main()
