"""Crash matrix of task jobs: SIGKILL a planner job at random points, reopen it, count.

A child process opens ``TaskManager(db)`` and runs (or, when the file holds
the job already, carries on with) a job of three levels:

- the objective plans in the style docs/agents.md used to show: it adds one
  story planner at a time, pausing between them as a language model would
  (and noting each in the log),
  makes itself depend on each, and parks with ``NeedsDependencies``; on its
  next run it checks that it has a dependency per story ("already planned");
- each story planner builds its plan a leaf at a time, pausing between leaves,
  then hands it over with ``ctx.delegate``;
- each leaf appends its id to an execution log (one ``write`` with
  ``O_APPEND``, which a SIGKILL cannot tear), pauses briefly and completes.

The parent kills the child ``kills`` times at random moments once it is
making progress, then lets a last child finish, and compares the log and the
file:

- ``lost``: leaves of the full plan that are not completed at the end (a
  planner killed mid-plan that left part of its plan behind would take it for
  the whole plan, and these leaves would never be created);
- ``redone``: leaf executions beyond one per leaf;
- ``in_flight_allowance``: what may be redone: the leaves ``in_progress`` in the
  file at each kill (a leaf's start is committed before it runs, its completion
  before anything else acts on it);
- ``stuck``: 1 when the last child did not end the job ``completed``.

Also used by ``bench/crash_matrix.py`` (25 kills, thousands of leaves).
"""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARALLELISM = 4
PAUSE_SECONDS = 0.002
CHILD_TIMEOUT_SECONDS = 300

CHILD = """
import os, sys
import anyio
import dagger_nb
from dagger_nb import NeedsDependencies

db, log, stories, leaves, parallelism, pause = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])
stories, leaves, parallelism = int(stories), int(leaves), int(parallelism)
log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
registry = dagger_nb.TaskAgentRegistry()

@dagger_nb.task_agent(name="objective", registry=registry)
async def objective(input, ctx):
    if not ctx.task.dependencies:  # first run: plan, one story at a time
        for story in range(stories):
            await anyio.sleep(pause)
            os.write(log_fd, f"plan {story}\\n".encode())
            child = ctx.add_task(f"story {story}", "story", {"story": story}, task_id=f"{ctx.task_id}/s{story}")
            ctx.depend_on(child)
        raise NeedsDependencies("waiting for the stories")
    if len(ctx.task.dependencies) != stories:
        raise RuntimeError(f"planned {len(ctx.task.dependencies)} of {stories} stories")
    return {"leaves": sum(out["leaves"] for out in ctx.dependency_outputs())}

@dagger_nb.task_agent(name="story", registry=registry)
async def story(input, ctx):
    plan = {}
    for leaf in range(leaves):
        await anyio.sleep(pause / 4)
        plan[f"k{leaf}"] = {"agent": "leaf", "input": {"story": input["story"], "leaf": leaf}}
    done = ctx.delegate(plan)
    return {"leaves": len(done)}

@dagger_nb.task_agent(name="leaf", registry=registry)
async def leaf(input, ctx):
    os.write(log_fd, f"{ctx.task_id}\\n".encode())
    await anyio.sleep(pause)
    return {"value": input["story"] * 1000 + input["leaf"]}

manager = dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None, max_parallel_tasks=parallelism)
if "crash" not in manager.jobs():
    manager.add_objective("crash", "plan and run", "objective", task_id="goal")
report = manager.run_sync("crash")
manager.close()
sys.exit(0 if report.status == "completed" else 3)
"""


def plan_shape(items: int) -> tuple[int, int]:
    """Stories and leaves per story for about ``items`` leaves."""
    stories = max(2, round(math.sqrt(items / 4)))
    return stories, max(1, math.ceil(items / stories))


def crash_matrix(*, kills: int, items: int, workdir: Path, seed: int) -> dict[str, int]:
    """Run the scenario; returns ``kills, items, lost, redone, in_flight_allowance, stuck``."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    db, log, script = workdir / "tasks.db", workdir / "executions.log", workdir / "agents_child.py"
    for leftover in (db, log, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")):
        leftover.unlink(missing_ok=True)
    script.write_text(textwrap.dedent(CHILD))
    stories, leaves = plan_shape(items)
    expected = {f"goal/s{story}/k{leaf}" for story in range(stories) for leaf in range(leaves)}
    command = [
        sys.executable, str(script), str(db), str(log), str(stories), str(leaves), str(PARALLELISM),
        str(PAUSE_SECONDS),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    step = max(1, len(expected) // (kills + 1))  # leaves run between two kills, on average
    done_kills = 0
    allowance = 0
    for kill in range(kills):
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The random kill point: some leaves on, then a moment more. The first kill comes
        # while the objective plans: once it has noted some of its stories.
        if kill == 0:
            target, plans = 0, rng.randint(1, stories - 1)
        else:
            target, plans = _progress(log)[1] + rng.randint(0, 2 * step), 0
        if not _wait_for_progress(child, db, log, plans=plans, leaves=target):
            break  # it finished (or died) before it could be killed: the job is done
        if kill:
            time.sleep(rng.uniform(0, 4 * PAUSE_SECONDS))
        if child.poll() is not None:
            break
        child.send_signal(signal.SIGKILL)
        child.wait()
        done_kills += 1
        allowance += _leaves_in_progress(db)
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS,
                           check=False)
    statuses, job_status = _stored(db)
    executions = _read_log(log)
    completed = {task_id for task_id, status in statuses.items() if status == "completed"}
    return {
        "kills": done_kills,
        "items": len(expected),
        "lost": len(expected - completed),
        "redone": len(executions) - len(set(executions)),
        "in_flight_allowance": allowance,
        "stuck": int(final.returncode != 0 or job_status != "completed"),
    }


def _wait_for_progress(child: subprocess.Popen[bytes], db: Path, log: Path, *, plans: int, leaves: int) -> bool:
    """Wait until the child has written to the file and the log notes ``plans`` stories planned
    and ``leaves`` leaf executions; False if it ended first."""
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    wal = Path(f"{db}-wal")
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        if wal.exists() and wal.stat().st_size > 0:
            planned, executed = _progress(log)
            if planned >= plans and executed >= leaves:
                return True
        time.sleep(0.001)
    child.kill()
    child.wait()
    return False


def _leaves_in_progress(db: Path) -> int:
    statuses, _ = _stored(db)
    return sum(status == "in_progress" and task_id.count("/") == 2 for task_id, status in statuses.items())


def _progress(log: Path) -> tuple[int, int]:
    """Stories planned and leaves executed so far, from the log (all runs)."""
    try:
        text = log.read_bytes()
    except FileNotFoundError:
        return 0, 0
    plans = text.count(b"plan ")
    return plans, text.count(b"\n") - plans


def _read_log(log: Path) -> list[str]:
    """The leaf executions in the log."""
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if line and not line.startswith("plan ")]


def _stored(db: Path) -> tuple[dict[str, str], str | None]:
    """Each task's status and the job's, read straight from the file."""
    if not db.exists():
        return {}, None
    connection = sqlite3.connect(db)
    try:
        statuses = dict(connection.execute("SELECT task_id, status FROM agent_tasks").fetchall())
        job = connection.execute("SELECT status FROM agent_jobs WHERE job_id = 'crash'").fetchone()
    except sqlite3.OperationalError:  # killed before its schema was committed
        return {}, None
    finally:
        connection.close()
    return statuses, None if job is None else job[0]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        print(crash_matrix(kills=5, items=200, workdir=Path(folder), seed=1))
