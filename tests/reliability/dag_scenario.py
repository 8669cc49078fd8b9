"""Crash matrix of DAG runs: SIGKILL a ``DagExecutor(db=...)`` run at random points, resume it, count.

A child process runs (or, when the store holds an unfinished run, resumes) a
workflow of ``items`` small nodes in ``CHAINS`` parallel chains, each node
pausing briefly and appending its id to an execution log (one ``write`` with
``O_APPEND``, which a SIGKILL cannot tear). The parent kills it ``kills`` times
at random moments once it is making progress, then lets a last child finish,
and compares the log and the store:

- ``redone``: executions beyond one per node;
- ``in_flight_allowance``: what may be redone: the nodes in flight at each kill
  (at most ``PARALLELISM`` each: a node is committed before its dependents start);
- ``lost``: nodes without their correct value in the store at the end (each
  node's value is its depth in its chain, computed from its dependency's value,
  so a value lost and recomputed wrongly shows up too);
- ``stuck``: 1 when the last child did not end the run ``succeeded``.

Also used by ``bench/crash_matrix.py`` (25 kills, thousands of nodes).
"""

from __future__ import annotations

import json
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
CHAINS = 8
PARALLELISM = 4
PAUSE_SECONDS = 0.003
CHILD_TIMEOUT_SECONDS = 300

CHILD = """
import os, sys, time
import dagger_nb
from dagger_nb.dag.spec import DagConfig, InputSpec, NodeSpec, WorkflowSpec

db, log, items, chains, parallelism, pause = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])
items, chains, parallelism = int(items), int(chains), int(parallelism)
log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
registry = dagger_nb.ActionRegistry()

@dagger_nb.action(registry=registry)
def step(node, previous=0):
    os.write(log_fd, f"{node}\\n".encode())
    time.sleep(pause)
    return previous + 1

nodes = []
for index in range(items):
    node_id = f"n{index}"
    inputs = [InputSpec(name="node", value=node_id)]
    if index >= chains:
        inputs.append(InputSpec(name="previous", reference=f"n{index - chains}.result"))
    nodes.append(NodeSpec(id=node_id, action="step", inputs=inputs))
spec = WorkflowSpec(name="crash", nodes=nodes, config=DagConfig(max_parallel_nodes=parallelism))
executor = dagger_nb.DagExecutor(registry, db=db)
executor.add_workflow(spec)
runs = executor.runs_frame()
if len(runs):
    run_id, status = runs["run_id"][0], runs["status"][0]
    report = executor.resume_sync(run_id) if status != "succeeded" else None
else:
    report = executor.run_sync("crash")
executor.close()
sys.exit(0 if report is None or report.status == "succeeded" else 3)
"""


def crash_matrix(*, kills: int, items: int, workdir: Path, seed: int) -> dict[str, int]:
    """Run the scenario; returns ``kills, items, lost, redone, in_flight_allowance, stuck``."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    db, log, script = workdir / "runs.db", workdir / "executions.log", workdir / "dag_child.py"
    for leftover in (db, log, Path(f"{db}-wal"), Path(f"{db}-shm")):
        leftover.unlink(missing_ok=True)
    script.write_text(textwrap.dedent(CHILD))
    command = [sys.executable, str(script), str(db), str(log), str(items), str(CHAINS), str(PARALLELISM),
               str(PAUSE_SECONDS)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done_kills = 0
    stuck = 0
    for _ in range(kills):
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = _executions(log)
        if not _wait_for_progress(child, log, before):
            break  # it finished (or died) before it could be killed: the run is done
        time.sleep(rng.uniform(0, 0.25))
        if child.poll() is not None:
            break
        child.send_signal(signal.SIGKILL)
        child.wait()
        done_kills += 1
    try:
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS,
                               check=False)
        if final.returncode != 0:
            stuck = 1
    except subprocess.TimeoutExpired:  # a run that never ends is stuck
        stuck = 1
    lines = _read_log(log)
    values, run_status = _stored(db)
    if run_status != "succeeded":
        stuck = 1
    lost = sum(values.get(f"n{index}") != index // CHAINS + 1 for index in range(items))
    return {
        "kills": done_kills,
        "items": items,
        "lost": lost,
        "redone": len(lines) - len(set(lines)),
        "in_flight_allowance": done_kills * PARALLELISM,
        "stuck": stuck,
    }


def _wait_for_progress(child: subprocess.Popen[bytes], log: Path, before: int) -> bool:
    """Wait until the child has executed a node more than before; False if it ended first."""
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        if _executions(log) > before:
            return True
        time.sleep(0.005)
    child.kill()
    child.wait()
    return False


def _executions(log: Path) -> int:
    try:
        with log.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


def _read_log(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if line]


def _stored(db: Path) -> tuple[dict[str, object], str | None]:
    """Each node's stored ``result`` and the run's status, read straight from the file."""
    connection = sqlite3.connect(db)
    try:
        status_row = connection.execute("SELECT status FROM dag_runs").fetchone()
        values = {
            namespace: json.loads(blob) if fmt == "json" else None
            for namespace, fmt, blob in connection.execute(
                "SELECT namespace, format, value FROM dag_cache WHERE key = 'result'"
            )
        }
    finally:
        connection.close()
    return values, None if status_row is None else status_row[0]


TOOLS_PER_STEP = 3
STEP_THINK_SECONDS = 0.12

DYNAMIC_CHILD = """
import os, sys, time
import anyio
import dagger_nb
from dagger_nb.dag.spec import DagConfig

db, log, steps, tools, think, pause = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])
steps, tools = int(steps), int(tools)
log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
registry = dagger_nb.ActionRegistry()

@dagger_nb.action(registry=registry, name="supervisor_step")
async def supervisor_step(iteration, ctx):
    os.write(log_fd, f"step {iteration}\\n".encode())
    if iteration >= steps:
        return "done"
    added = [ctx.add_node("tool", inputs={"step": {"value": iteration}, "k": {"value": k}}) for k in range(tools)]
    ctx.add_node("supervisor_step", dependencies=[*added, ctx.node])
    await anyio.sleep(think)  # thinking on while its tools run: most kills land here
    return "planned"

@dagger_nb.action(registry=registry)
def tool(step, k):
    os.write(log_fd, f"tool {step} {k}\\n".encode())
    time.sleep(pause)
    return step * 100 + k

executor = dagger_nb.DagExecutor(registry, db=db, config=DagConfig(max_parallel_nodes=4, max_iterations=1000))
runs = executor.runs_frame()
if len(runs):
    run_id, status = runs["run_id"][0], runs["status"][0]
    report = executor.resume_sync(run_id) if status != "succeeded" else None
else:
    report = executor.run_agent_dag_sync("agent")
executor.close()
sys.exit(0 if report is None or report.status == "succeeded" else 3)
"""


def dynamic_crash_matrix(*, kills: int, steps: int, workdir: Path, seed: int) -> dict[str, int]:
    """A supervisor loop (``run_agent_dag``) of ``steps`` steps, each adding ``TOOLS_PER_STEP``
    tool nodes and the next step, SIGKILLed ``kills`` times, mostly while a step thinks after its
    tools finished.

    Counts like :func:`crash_matrix`, plus ``orphans``: nodes in the final workflow beyond one
    step per iteration and its tools (a killed step's additions kept and then added again).
    ``in_flight_allowance``: per kill, the step in flight and the tools it added (they are part of
    its work and re-run with it); the tools of a committed step are never run again.
    """
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    db, log, script = workdir / "agent.db", workdir / "agent.log", workdir / "agent_child.py"
    for leftover in (db, log, Path(f"{db}-wal"), Path(f"{db}-shm")):
        leftover.unlink(missing_ok=True)
    script.write_text(textwrap.dedent(DYNAMIC_CHILD))
    command = [sys.executable, str(script), str(db), str(log), str(steps), str(TOOLS_PER_STEP),
               str(STEP_THINK_SECONDS), str(PAUSE_SECONDS)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done_kills = stuck = 0
    for _ in range(kills):
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _wait_for_progress(child, log, _executions(log)):
            break
        time.sleep(rng.uniform(0.05, 0.4))
        if child.poll() is not None:
            break
        child.send_signal(signal.SIGKILL)
        child.wait()
        done_kills += 1
    try:
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS,
                               check=False)
        stuck = int(final.returncode != 0)
    except subprocess.TimeoutExpired:
        stuck = 1
    lines = _read_log(log)
    connection = sqlite3.connect(db)
    try:
        status, spec = connection.execute("SELECT status, spec FROM dag_runs").fetchone()
        values = {namespace: json.loads(blob) for namespace, fmt, blob in connection.execute(
            "SELECT namespace, format, value FROM dag_cache WHERE key = 'result'") if fmt == "json"}
    finally:
        connection.close()
    stuck = stuck or int(status != "succeeded")
    produced: dict[tuple[int, int], list[object]] = {}
    steps_seen = 0
    for node in json.loads(spec)["nodes"]:
        inputs = {item["name"]: item.get("value") for item in node.get("inputs", [])}
        if node["action"] == "tool":
            produced.setdefault((inputs["step"], inputs["k"]), []).append(values.get(node["id"]))
        else:
            steps_seen += 1
    expected = [(step, k) for step in range(steps) for k in range(TOOLS_PER_STEP)]
    lost = sum(produced.get(key) != [key[0] * 100 + key[1]] for key in expected)
    orphans = sum(len(found) for found in produced.values()) - len(expected) + steps_seen - (steps + 1)
    return {
        "kills": done_kills,
        "items": len(expected),
        "lost": lost,
        "orphans": orphans,
        "redone": len(lines) - len(set(lines)),
        "in_flight_allowance": done_kills * (TOOLS_PER_STEP + 1),
        "stuck": stuck,
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        print(crash_matrix(kills=5, items=300, workdir=Path(folder), seed=1))
