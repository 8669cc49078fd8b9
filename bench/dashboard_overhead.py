"""Dashboard overhead: a 2,000-node DAG run with and without a live RunDashboard, in one process.

    python bench/dashboard_overhead.py [--nodes 2000] [--repeat 3]

Headless: the widgets have no frontend (ipywidgets uses a dummy comm), so this
measures what the dashboard costs the kernel: the per-event bookkeeping and
the throttled redraws. The graph of a run this size is drawn once, after the
run, in a worker thread; it is not part of the run time (its own time is
printed). Targets: run time with the dashboard <= 1.5x without; redraws <= 4
per second of run time + 2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time

from dagger_nb import ActionRegistry, DagExecutor, InputSpec, NodeSpec, WorkflowSpec
from dagger_nb.cache import Cache


def build(nodes: int, seed: int = 11) -> tuple[DagExecutor, str]:
    """A layered DAG of ``nodes`` trivial async actions (each reads up to two earlier nodes)."""
    registry = ActionRegistry()

    async def step(a: int = 0, b: int = 0) -> int:
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


async def one_run(executor: DagExecutor, name: str, *, dashboard: bool) -> dict[str, float]:
    from dagger_nb.notebook.widgets import RunDashboard

    gc.collect()  # the same clean slate for both variants (a full collection costs ~50 ms here)
    start = time.perf_counter()
    handle = executor.start(name, cache=Cache())
    board = RunDashboard(handle) if dashboard else None
    report = await handle.wait()
    elapsed = time.perf_counter() - start
    assert report.status == "succeeded", report.error
    result: dict[str, float] = {"seconds": elapsed}
    if board is not None:
        result["redraws"] = board.redraws
        result["events"] = board.events_seen
        graph_start = time.perf_counter()
        board.graph.join()
        result["graph_seconds"] = time.perf_counter() - graph_start
        board.close()
    return result


async def main(nodes: int, repeat: int) -> int:
    executor, name = build(nodes)
    await one_run(executor, name, dashboard=False)  # warm-up
    plain, watched = [], []
    for _ in range(repeat):
        plain.append(await one_run(executor, name, dashboard=False))
        watched.append(await one_run(executor, name, dashboard=True))
    await executor.aclose()
    base = statistics.median(r["seconds"] for r in plain)
    with_board = statistics.median(r["seconds"] for r in watched)
    ratio = with_board / base
    worst_redraws = max(r["redraws"] - (4 * r["seconds"] + 2) for r in watched)
    print(f"nodes: {nodes}, repeats: {repeat}")
    print(f"without dashboard: {base * 1000:8.1f} ms (median)")
    print(f"with dashboard:    {with_board * 1000:8.1f} ms (median)   ratio {ratio:.2f}x (target <= 1.5x)")
    for r in watched:
        allowed = 4 * r["seconds"] + 2
        print(
            f"  run {r['seconds'] * 1000:7.1f} ms: {int(r['events'])} events, {int(r['redraws'])} redraws "
            f"(allowed {allowed:.1f}); final graph drawn after the run in {r['graph_seconds']:.2f} s"
        )
    ok = ratio <= 1.5 and worst_redraws <= 0
    print("OK" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.nodes, options.repeat)))
