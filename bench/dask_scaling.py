"""Scale-out with the Dask backend, measured against baselines in the same run.

    python bench/dask_scaling.py [--repeat 5] [--nodes 64] [--fanout 1000] [--layered 20x50]

1. ``cpu_64``: 64 independent CPU-bound pure-Python nodes of ~50 ms each, run
   by the same executor with the local backend (threads: the GIL serialises
   them) and with ``DaskBackend`` on a ``LocalCluster`` of 2 single-threaded
   worker processes. Printed: wall times and the speed-up (target >= 1.6x),
   and for context two raw-Dask versions on the same cluster: ``client.map``
   of the 64 calls with one gather at the end (what the machine allows), and
   the executor's pattern (``max_parallel_nodes`` calls in flight, each result
   brought back as it finishes, the next call submitted then). Every number is
   the best of ``--repeat`` rounds, the variants taking turns within each round.
2. ``fanout_1000`` (root -> 1000 trivial nodes -> sink) and ``layered_20x50``
   (20 layers of 50 nodes, each taking 3 of the layer before, and a sink): a run
   of ``DaskBackend`` up to the sink's value in the notebook, paired with
   ``dask.distributed`` handed the whole graph at once (``client.get`` of the
   graph, the sink's value back) on the same cluster. Each round runs both, in
   alternating order; printed: the median of the rounds' ratios (target <= 1.3x),
   the range, and the verdict. For context on the fan-out, plain ``client.submit``
   of one call per node (futures as arguments, the sink's value gathered), the
   comparison this script made before, and raw Dask bringing every node's result
   back to the notebook as the executor once did.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from dagger_nb import ActionRegistry, DagConfig, DagExecutor, InputSpec, NodeSpec, WorkflowSpec
from dagger_nb.backends.dask import DaskBackend


def spin(n: int) -> int:
    """Pure-Python CPU work: holds the GIL throughout."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calibrate(seconds: float) -> int:
    """Loop count for ``spin`` to take about ``seconds`` here: the median of seven timings, so
    that one fast or slow moment of the machine does not halve or double every node."""
    n = 100_000
    while _timed_spin(n) <= 0.02:
        n *= 2
    took = statistics.median(_timed_spin(n) for _ in range(7))
    return int(n * seconds / took)


def _timed_spin(n: int) -> float:
    start = time.perf_counter()
    spin(n)
    return time.perf_counter() - start


def combine(**inputs: int) -> int:
    return sum(inputs.values()) + 1


def best_of(repeat: int, *variants: Callable[[], Any]) -> list[tuple[float, Any]]:
    """Best wall time (and last value) of each variant over ``repeat`` rounds. The variants
    alternate within a round, so a machine that slows down for a while slows all of them."""
    best: list[float] = [float("inf")] * len(variants)
    values: list[Any] = [None] * len(variants)
    for _ in range(repeat):
        for i, fn in enumerate(variants):
            gc.collect()
            start = time.perf_counter()
            values[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return list(zip(best, values, strict=True))


def paired(rounds: int, ours: Callable[[], Any], baseline: Callable[[], Any]) -> tuple[list[float], list[float], Any]:
    """Each round times ``ours`` and ``baseline`` back to back, who goes first alternating; returns
    the rounds' times of each and ``ours``'s last value."""
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    value = None
    for round_ in range(rounds):
        order = [("ours", ours), ("baseline", baseline)]
        for name, fn in order if round_ % 2 == 0 else reversed(order):
            gc.collect()
            start = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - start)
            if name == "ours":
                value = result
    return times["ours"], times["baseline"], value


# -- 1. CPU-bound nodes: threads against worker processes ---------------------------------------------

def cpu_workflow(nodes: int, loops: int) -> tuple[ActionRegistry, WorkflowSpec]:
    registry = ActionRegistry()
    registry.register("spin", spin)
    spec = WorkflowSpec(
        name="cpu",
        config=DagConfig(max_parallel_nodes=8, timeout_seconds=None),
        nodes=[NodeSpec(id=f"n{i}", action="spin", inputs=[InputSpec(name="n", value=loops)]) for i in range(nodes)],
    )
    return registry, spec


def rolling(client: Any, loops: int, nodes: int, in_flight: int) -> None:
    """Context only: raw Dask the executor's way, ``in_flight`` calls at a time, each result
    brought back to the notebook as it finishes and the next call submitted then."""
    from distributed import as_completed

    finished = as_completed([client.submit(spin, loops, pure=False) for _ in range(min(in_flight, nodes))],
                            with_results=True)
    submitted = min(in_flight, nodes)
    for _ in finished:
        if submitted < nodes:
            finished.add(client.submit(spin, loops, pure=False))
            submitted += 1


def run_workflow(executor: DagExecutor, name: str) -> Any:
    report = executor.run_sync(name)
    assert report.success, report.error
    return report


def sink_value(executor: DagExecutor, name: str) -> int:
    """A run up to the sink's value in the notebook (fetched there if it stayed on the cluster)."""
    return int(run_workflow(executor, name).cache.get("sink", "result"))


# -- 2. fanout_1000: the backend against plain client.submit ------------------------------------------

def fanout(n: int) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {"root": []}
    deps |= {f"c{i}": ["root"] for i in range(n)}
    deps["sink"] = [f"c{i}" for i in range(n)]
    return deps


def layered(layers: int, width: int, seed: int = 7) -> dict[str, list[str]]:
    """``layers`` layers of ``width`` nodes, each taking 3 nodes of the layer before, and a sink
    taking the last layer (the shape bench/dag_overhead.py uses)."""
    rng = random.Random(seed)
    deps: dict[str, list[str]] = {f"l0_{j}": [] for j in range(width)}
    for layer in range(1, layers):
        for j in range(width):
            deps[f"l{layer}_{j}"] = [f"l{layer - 1}_{k}" for k in sorted(rng.sample(range(width), min(3, width)))]
    deps["sink"] = [f"l{layers - 1}_{j}" for j in range(width)]
    return deps


def whole_graph(deps: dict[str, list[str]]) -> dict[str, Any]:
    """The graph as ``dask.distributed`` takes it at once: one task per node, its inputs by key."""
    from dask._task_spec import Task, TaskRef

    return {node: Task(node, combine, **{f"x{i}": TaskRef(p) for i, p in enumerate(parents)})
            for node, parents in deps.items()}


def fanout_workflow(deps: dict[str, list[str]]) -> tuple[ActionRegistry, WorkflowSpec]:
    registry = ActionRegistry()
    registry.register("combine", combine)
    nodes = [
        NodeSpec(id=node, action="combine",
                 inputs=[InputSpec(name=f"x{i}", reference=f"{dep}.result") for i, dep in enumerate(parents)])
        for node, parents in deps.items()
    ]
    # Every ready node in flight at once, as plain client.submit has them.
    config = DagConfig(max_parallel_nodes=len(deps), timeout_seconds=None)
    return registry, WorkflowSpec(name="fanout", config=config, nodes=nodes)


def plain_submit(client: Any, deps: dict[str, list[str]]) -> int:
    futures: dict[str, Any] = {}
    for node, parents in deps.items():
        futures[node] = client.submit(combine, pure=False, **{f"x{i}": futures[p] for i, p in enumerate(parents)})
    return int(futures["sink"].result())


def ahead_of_time_streamed(client: Any, deps: dict[str, list[str]]) -> int:
    """What the executor does, in raw Dask: the whole graph submitted up front, futures as
    arguments (as plain submit does), and every node's result streamed back to the notebook
    as it finishes."""
    from distributed import as_completed

    futures: dict[str, Any] = {}
    for node, parents in deps.items():
        futures[node] = client.submit(combine, pure=False, **{f"x{i}": futures[p] for i, p in enumerate(parents)})
    values = {future.key: value for batch in as_completed(futures.values(), with_results=True).batches()
              for future, value in batch}
    return int(values[futures["sink"].key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--layered", default="20x50", help="layers x width")
    args = parser.parse_args()
    layers, _, width = args.layered.partition("x")

    import dask
    from distributed import Client, LocalCluster

    loops = calibrate(0.05)
    failures: list[str] = []
    # allowed-failures=0, as docs/dask.md advises (DaskBackend warns otherwise)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:
        registry, spec = cpu_workflow(args.nodes, loops)
        local = DagExecutor(registry)
        local.add_workflow(spec)
        on_dask = DagExecutor(registry, backend=DaskBackend(client))
        on_dask.add_workflow(spec)
        run_workflow(on_dask, "cpu")  # warm-up: workers import dagger-nb and unpickle spin once
        in_flight = spec.config.max_parallel_nodes
        (local_time, _), (dask_time, report), (raw_time, _), (rolling_time, _) = best_of(
            args.repeat,
            lambda: run_workflow(local, "cpu"),
            lambda: run_workflow(on_dask, "cpu"),
            lambda: client.gather(client.map(spin, [loops] * args.nodes, pure=False)),
            lambda: rolling(client, loops, args.nodes, in_flight),
        )
        used = sorted({o.worker for o in report.outcomes.values()})
        speedup = local_time / dask_time
        print(f"cpu_{args.nodes} (~50 ms each, {loops} loops): local threads {local_time:.2f} s, "
              f"dask 2 processes {dask_time:.2f} s on {len(used)} workers: speed-up {speedup:.2f}x (target >= 1.6x)")
        print(f"  raw Dask on the same cluster, client.map then one gather: {raw_time:.2f} s, "
              f"{local_time / raw_time:.2f}x the local threads")
        print(f"  raw Dask the executor's way ({in_flight} in flight, each result back as it finishes): "
              f"{rolling_time:.2f} s, {local_time / rolling_time:.2f}x")
        if speedup < 1.6:
            failures.append(f"cpu_{args.nodes}: speed-up {speedup:.2f}x < 1.6x")

        deps = fanout(args.fanout)
        registry, spec = fanout_workflow(deps)
        executor = DagExecutor(registry, backend=DaskBackend(client))
        executor.add_workflow(spec)
        expected = plain_submit(client, deps)  # warm-up for both
        run_workflow(executor, "fanout")
        timings = best_of(
            args.repeat,
            lambda: plain_submit(client, deps),
            lambda: run_workflow(executor, "fanout"),
            lambda: ahead_of_time_streamed(client, deps),
        )
        (base_time, base_value), (ours_time, report), (ahead_time, _) = timings
        ours_value = report.cache.get("sink", "result")
        if not base_value == ours_value == expected:
            sys.exit(f"fanout: sink values differ: client.submit {base_value}, dagger-nb {ours_value}")
        nodes = len(deps)
        print(f"fanout_{args.fanout} ({nodes} nodes): client.submit {base_time:.2f} s "
              f"({base_time / nodes * 1e6:.0f} us/node), DaskBackend {ours_time:.2f} s "
              f"({ours_time / nodes * 1e6:.0f} us/node): {ours_time / base_time:.2f}x (context, best of {args.repeat})")
        print(f"  raw Dask, the graph submitted up front and every result streamed back to the notebook: "
              f"{ahead_time:.2f} s, {ahead_time / base_time:.2f}x client.submit")

        print(f"against dask.distributed handed the whole graph at once (client.get), median of {args.repeat} "
              "paired rounds:")
        shapes = {f"fanout_{args.fanout}": deps, f"layered_{args.layered}": layered(int(layers), int(width))}
        for label, shape in shapes.items():
            registry, spec = fanout_workflow(shape)
            executor = DagExecutor(registry, backend=DaskBackend(client))
            executor.add_workflow(spec)
            graph = whole_graph(shape)
            expected = client.get(graph, "sink")  # warm-up for both
            sink_value(executor, "fanout")
            ours, baseline, value = paired(args.repeat, partial(sink_value, executor, "fanout"),
                                           partial(client.get, graph, "sink"))
            if value != expected:
                sys.exit(f"{label}: sink values differ: client.get {expected}, dagger-nb {value}")
            ratios = [mine / theirs for mine, theirs in zip(ours, baseline, strict=True)]
            ratio = statistics.median(ratios)
            verdict = "met" if ratio <= 1.3 else "MISSED"
            print(f"  {label} ({len(shape)} nodes): client.get {statistics.median(baseline):.2f} s, DaskBackend "
                  f"{statistics.median(ours):.2f} s: ratio {ratio:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}; "
                  f"target <= 1.3x: {verdict})")
            if ratio > 1.3:
                failures.append(f"{label}: {ratio:.2f}x client.get > 1.3x")
    if failures:
        print("MISSED: " + "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
