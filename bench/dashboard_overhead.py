"""Dashboard overhead: a 500-node DAG run and a task job side by side, with and without live dashboards.

    python bench/dashboard_overhead.py [--nodes 500] [--tasks 300] [--work-ms 10] [--repeat 5]

Every action and every agent waits ``--work-ms`` (a short I/O call; 8 run at a
time in each) and returns. Each round starts the run and the job together on
one loop and times until both ended: once with nothing watching, once with a ``RunDashboard`` on the run
and a ``JobDashboard`` on the job. Headless: the widgets have no frontend
(ipywidgets uses a dummy comm), so this measures what the dashboards cost the
kernel: the per-event bookkeeping, the throttled redraws, the ticking clock,
Graphviz in its worker threads. ``--work-ms 0`` (no work at all: the run
then takes a few tens of milliseconds) shows the dashboards' fixed costs
(creating the widgets, the final drawings) against nearly nothing. A probe task sleeping 5 ms at a time records
the loop's worst lag (how long a cell's other work would wait).

Targets (exit 1 on a miss): the median time with dashboards <= 1.5x the median
without; each dashboard redraws at most 4 times a second plus the final one
(consecutive redraws, the final one aside, at least 0.25 s apart, and no more
than 4 per second of its run + the first and the final one).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import random
import statistics
import sys
import time
from typing import Any

from dagger_nb import ActionRegistry, DagExecutor, InputSpec, NodeSpec, WorkflowSpec
from dagger_nb.cache import Cache

#: The dashboards' redraw interval (their default) and the largest rate the target allows.
INTERVAL = 0.25
MAX_RATE = 4.0


def build_run(nodes: int, work: float, seed: int = 11) -> tuple[DagExecutor, str]:
    """A layered DAG of ``nodes`` async actions waiting ``work`` seconds (each reads up to two earlier nodes)."""
    registry = ActionRegistry()

    async def step(a: int = 0, b: int = 0) -> int:
        await asyncio.sleep(work)
        return a + b + 1

    registry.register("step", step)
    rng = random.Random(seed)
    specs = []
    for i in range(nodes):
        inputs = []
        if i >= 10:
            for name, parent in zip("ab", rng.sample(range(max(0, i - 50), i), 2), strict=True):
                inputs.append(InputSpec(name=name, reference=f"n{parent}.result"))
        specs.append(NodeSpec(id=f"n{i}", action="step", inputs=inputs))
    spec = WorkflowSpec(name=f"bench_{nodes}", nodes=specs)
    executor = DagExecutor(registry)
    executor.add_workflow(spec)
    return executor, spec.name


def job_registry(work_seconds: float) -> Any:
    from dagger_nb.agents import TaskAgentRegistry

    registry = TaskAgentRegistry()

    async def work(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        await asyncio.sleep(work_seconds)
        return {"i": input["i"]}

    registry.register("work", work)
    return registry


def add_job(manager: Any, job_id: str, tasks: int) -> None:
    """``tasks`` tasks in chains of ten (each waits for the one before it)."""
    for i in range(tasks):
        dependencies = [f"{job_id}-t{i - 1}"] if i % 10 else []
        manager.add_task(job_id, f"task {i}", "work", {"i": i}, task_id=f"{job_id}-t{i}", dependencies=dependencies)


class RedrawClock:
    """Records when a dashboard redrew (wraps its ``draw``)."""

    def __init__(self, board: Any) -> None:
        self.times: list[float] = []
        draw = board.draw

        def timed(*, final: bool) -> None:
            self.times.append(time.perf_counter())
            draw(final=final)

        board.draw = timed


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    """The loop's lag: how late a 5 ms sleep wakes up."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - before - 0.005)


async def one_round(executor: DagExecutor, name: str, manager: Any, job_id: str, tasks: int, *,
                    dashboards: bool) -> dict[str, Any]:
    from dagger_nb.notebook import JobDashboard, RunDashboard

    add_job(manager, job_id, tasks)
    gc.collect()  # the same clean slate for both variants
    lags: list[float] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(lags, stop))
    start = time.perf_counter()
    run = executor.start(name, cache=Cache())
    job = manager.start(job_id)
    boards: dict[str, Any] = {}
    clocks: dict[str, RedrawClock] = {}
    if dashboards:
        boards = {"run": RunDashboard(run), "job": JobDashboard(manager, job_id, handle=job)}
        clocks = {key: RedrawClock(board) for key, board in boards.items()}
    ends: dict[str, float] = {}

    async def ended(key: str, waiter: Any) -> Any:
        result = await waiter
        ends[key] = time.perf_counter()
        return result

    report, job_report = await asyncio.gather(ended("run", run.wait()), ended("job", job.wait()))
    elapsed = time.perf_counter() - start
    stop.set()
    await prober
    assert report.status == "succeeded", report.error
    assert job_report.success, job_report.failed()
    result: dict[str, Any] = {"seconds": elapsed, "lag": max(lags, default=0.0), "boards": {}}
    for key, board in boards.items():
        times = clocks[key].times
        seconds = ends[key] - start
        gaps = [later - earlier for earlier, later in itertools.pairwise(times[:-1])]  # the final one aside
        graph_start = time.perf_counter()
        board.settle()
        result["boards"][key] = {
            "seconds": seconds, "redraws": len(times), "events": board.events_seen, "ticks": board.ticks,
            "min_gap": min(gaps, default=float("inf")), "renders": board.graph.renders,
            "graph_after": time.perf_counter() - graph_start,
        }
        board.close()
    return result


def redraws_ok(board: dict[str, Any]) -> bool:
    """At most 4 a second plus the final one: non-final redraws at least an interval apart, and no more
    than 4 per second of the work plus the first and the final one."""
    spaced = board["min_gap"] >= INTERVAL - 0.002  # timer slack
    return spaced and board["redraws"] <= MAX_RATE * board["seconds"] + 2


async def main(nodes: int, tasks: int, work_ms: float, repeat: int) -> int:
    from dagger_nb.agents import TaskManager

    work = work_ms / 1000
    executor, name = build_run(nodes, work)
    plain: list[dict[str, Any]] = []
    watched: list[dict[str, Any]] = []
    async with TaskManager(registry=job_registry(work), max_parallel_tasks=8) as manager:
        await one_round(executor, name, manager, "warm-up", tasks, dashboards=False)
        for index in range(repeat):
            plain.append(await one_round(executor, name, manager, f"plain-{index}", tasks, dashboards=False))
            watched.append(await one_round(executor, name, manager, f"watched-{index}", tasks, dashboards=True))
    await executor.aclose()
    base = statistics.median(r["seconds"] for r in plain)
    with_boards = statistics.median(r["seconds"] for r in watched)
    ratio = with_boards / base
    print(f"a {nodes}-node run and a {tasks}-task job side by side ({work_ms:g} ms of work each), "
          f"{repeat} rounds each")
    print(f"without dashboards: {base * 1000:8.1f} ms (median), worst loop lag "
          f"{max(r['lag'] for r in plain) * 1000:.1f} ms")
    print(f"with dashboards:    {with_boards * 1000:8.1f} ms (median), worst loop lag "
          f"{max(r['lag'] for r in watched) * 1000:.1f} ms   ratio {ratio:.2f}x (target <= 1.5x)")
    redraws_met = True
    for r in watched:
        parts = []
        for key, board in r["boards"].items():
            ok = redraws_ok(board)
            redraws_met &= ok
            gap = "" if board["min_gap"] == float("inf") else f", closest {board['min_gap'] * 1000:.0f} ms apart"
            parts.append(
                f"{key}: {board['redraws']} redraws in {board['seconds']:.2f} s "
                f"({(board['redraws'] - 1) / board['seconds']:.1f}/s + the final one{gap}; {board['events']} events, "
                f"{board['renders']} graph renders){'' if ok else ' MISSED'}"
            )
        print(f"  round {r['seconds'] * 1000:7.1f} ms: " + "; ".join(parts))
    ok = ratio <= 1.5 and redraws_met
    print("OK" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--work-ms", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.nodes, options.tasks, options.work_ms, options.repeat)))
