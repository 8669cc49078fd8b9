"""Task manager throughput against a raw SQLite floor, measured in the same run.

Shapes: ``wide`` (2,000 independent trivial tasks) and ``chain`` (500 tasks,
each depending on the previous one). Each is run by a ``TaskManager`` with a
database on a temporary file and by an in-memory one; the time covers adding
the tasks and running the job. Tasks are added from a coroutine, as in a
notebook cell, where the additions of one loop step share one commit; the last
columns add them from plain sync code instead (one commit per task added), for
information.

The floor is raw ``sqlite3`` with the task store's pragmas (WAL,
``synchronous=NORMAL``, no checkpoint inside a commit: the store checkpoints in
a background thread, the floor not at all while timed) doing, per task, the
three single-row committed transactions a task needs (insert it pending,
update it in progress, update it completed).

Each shape runs ``--repeats`` rounds (default 15), the variants taking turns
within a round. The table gives each variant's median round, and the ratios
are the median over the rounds of the floor's time over the variant's time in
the same round. Not the best round: this VM runs the same code up to 1.5x
faster in spells of a few hundred milliseconds, which about one round in five
falls into, so the best of N rounds measures whichever variant happened to
catch the fastest spell (the floor's 500-task chain lasts only 25 ms). In ten
runs of one build the chain's best-of-15 ratio ranged over 0.43-0.65x while
its median paired ratio stayed within 0.52-0.59x. The best-of ratios are
printed after the table for reference.

Targets: with a database >= 0.5x the floor on both shapes; in memory >= 10,000
tasks/s on the wide shape. Run with ``python bench/task_throughput.py``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from dagger_nb.agents import JobReport, TaskAgentRegistry, TaskManager, task_agent
from dagger_nb.agents.model import Task, TaskOutput, TaskStatus
from dagger_nb.agents.store import STORE_PRAGMAS
from dagger_nb.storage import open_database

FLOOR_SCHEMA = "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, data TEXT NOT NULL);"
SHAPES = {"wide": 2000, "chain": 500}
REPEATS = 15  # see the module's docstring


def make_registry() -> TaskAgentRegistry:
    registry = TaskAgentRegistry()

    @task_agent(name="trivial", registry=registry)
    async def trivial(input: dict, ctx: object) -> dict:
        return {"n": input["n"] + 1}

    return registry


def add_tasks(manager: TaskManager, shape: str, count: int) -> None:
    previous: str | None = None
    for n in range(count):
        deps = (previous,) if shape == "chain" and previous is not None else ()
        previous = manager.add_task("bench", f"task {n}", "trivial", {"n": n}, dependencies=deps)


def run_manager(shape: str, count: int, db: Path | None, *, add_from: str = "async") -> float:
    """Seconds to add ``count`` tasks of ``shape`` and run the job to completion.

    ``add_from="async"`` adds them from a coroutine, as a notebook cell does;
    ``"sync"`` from plain code with no event loop.
    """
    manager = TaskManager(db, registry=make_registry(), heartbeat_interval=None)

    async def add_and_run() -> JobReport:
        add_tasks(manager, shape, count)
        return await manager.run("bench")

    try:
        start = time.perf_counter()
        if add_from == "async":
            report = anyio.run(add_and_run)
        else:
            add_tasks(manager, shape, count)
            report = manager.run_sync("bench")
        elapsed = time.perf_counter() - start
        assert report.success, report
        assert len(report.outcomes) == count
    finally:
        manager.close()
    return elapsed


def run_floor(count: int, db: Path) -> float:
    """Seconds for raw sqlite3 to do ``count`` x 3 single-row committed transactions."""
    connection = open_database(db, schema=FLOOR_SCHEMA)
    for pragma in STORE_PRAGMAS:
        connection.execute(pragma)
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


def collected(measure: Callable[..., float], *args: Any, **kwargs: Any) -> float:
    """``measure(...)`` after a full garbage collection, so that no variant pays for the
    garbage an earlier one left (a full collection walks every object of the process)."""
    gc.collect()
    return measure(*args, **kwargs)


def main() -> int:
    """Run both shapes; 0 if the targets are met, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"rounds per shape (default {REPEATS})")
    args = parser.parse_args()
    ok = True
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(
            f"{'shape':<7}{'tasks':>7}{'floor t/s':>11}{'db t/s':>9}{'ratio':>8}"
            f"{'memory t/s':>12}{'db, sync adds':>15}{'ratio':>8}"
        )
        for shape, count in SHAPES.items():
            # interleaved, so that every variant sees the same machine load
            times: dict[str, list[float]] = {"floor": [], "db": [], "memory": [], "sync": []}
            for i in range(args.repeats):
                times["floor"].append(collected(run_floor, count, root / f"floor-{shape}-{i}.db"))
                times["db"].append(collected(run_manager, shape, count, root / f"db-{shape}-{i}.db"))
                times["memory"].append(collected(run_manager, shape, count, None))
                times["sync"].append(
                    collected(run_manager, shape, count, root / f"sync-{shape}-{i}.db", add_from="sync")
                )
            floor, with_db, memory, sync_adds = (
                statistics.median(times[key]) for key in ("floor", "db", "memory", "sync")
            )
            ratio = paired_median(times["floor"], times["db"])
            best[shape] = min(times["floor"]) / min(times["db"])
            print(
                f"{shape:<7}{count:>7}{count / floor:>11,.0f}{count / with_db:>9,.0f}{ratio:>7.3f}x"
                f"{count / memory:>12,.0f}{count / sync_adds:>15,.0f}"
                f"{paired_median(times['floor'], times['sync']):>7.2f}x"
            )
            ok &= ratio >= 0.5
            if shape == "wide":
                ok &= count / memory >= 10_000
    print(
        f"for reference, the best of {args.repeats} rounds of each (floor over db):",
        ", ".join(f"{shape} {ratio:.2f}x" for shape, ratio in best.items()),
    )
    print(
        "targets: db >= 0.5x floor on both shapes, memory >= 10,000 tasks/s on wide:",
        "met" if ok else "MISSED",
    )
    return 0 if ok else 1


def paired_median(floor: list[float], other: list[float]) -> float:
    """The median over the rounds of the floor's time over the other variant's time in the same round."""
    return statistics.median(f / o for f, o in zip(floor, other, strict=True))


if __name__ == "__main__":
    sys.exit(main())
