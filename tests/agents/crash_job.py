"""Run by test_persistence.py in a subprocess: a 200-task job that hangs partway, to be SIGKILLed.

Usage: python crash_job.py DB EFFECTS HANG_AFTER

Every agent call appends its task id to EFFECTS (the side effect we count);
from the HANG_AFTER-th call on, agents hang so the process is killed with
completed, in-progress and pending tasks in the database.
"""

from __future__ import annotations

import sys

import anyio

from dagger_nb.agents import TaskAgentRegistry, TaskContext, TaskManager, task_agent

TASKS = 200
WIDTH = 10  # ten chains of twenty: task n depends on task n - WIDTH


def task_id(n: int) -> str:
    return f"t{n:03d}"


def add_tasks(manager: TaskManager) -> None:
    for n in range(TASKS):
        deps = [task_id(n - WIDTH)] if n >= WIDTH else []
        manager.add_task("crash", f"task {n}", "work", {"n": n}, task_id=task_id(n), dependencies=deps)


def main() -> None:
    db, effects, hang_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    registry = TaskAgentRegistry()
    calls = 0

    @task_agent(name="work", registry=registry)
    async def work(input: dict, ctx: TaskContext) -> dict:
        nonlocal calls
        with open(effects, "a") as file:
            file.write(f"{ctx.task_id}\n")
        calls += 1
        if calls >= hang_after:
            await anyio.sleep_forever()
        return {"n": input["n"]}

    manager = TaskManager(db, registry=registry, heartbeat_interval=None)
    add_tasks(manager)
    manager.run_sync("crash")


if __name__ == "__main__":
    main()
