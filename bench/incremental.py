"""Incremental runs against full runs: what reuse saves, and what fingerprinting costs.

    python bench/incremental.py [--nodes 30] [--node-ms 50] [--rounds 3] [--small]

A pipeline of ``--nodes`` nodes in a chain, each a sync action sleeping ``--node-ms``
and passing its input on plus one, run with a run database (``db=``). Each round, in a
fresh folder, with a fresh executor per run (as after a kernel restart):

- ``plain``: the pipeline without incremental mode (the baseline);
- ``full``: the first incremental run (nothing stored: every node is fingerprinted, runs
  and has its result stored);
- ``unchanged``: the same again (every node is reused);
- ``changed``: the action of the middle node replaced by one giving another output, so
  it and every node after it run again.

Printed: the median of each over the rounds, and the ratios the targets (issue 28) are
about: ``unchanged`` at most 5% of ``full``; ``changed`` at most the changed node's
downstream share of ``full`` plus 10%; ``full`` at most 1.15x ``plain``. ``--small``: one
round (for the test suite). Exit 1 when a target is missed, or when a run's statuses are
not the ones reuse promises.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.dag.spec import DagConfig, InputSpec, NodeSpec, WorkflowSpec

NODE_SECONDS = 0.05


def step(value: int) -> int:
    time.sleep(NODE_SECONDS)
    return value + 1


def step_changed(value: int) -> int:
    time.sleep(NODE_SECONDS)
    return value + 2


def pipeline(nodes: int) -> WorkflowSpec:
    """A chain: node ``n<i>`` runs its own action ``step_<i>`` on the previous node's result."""
    specs = [NodeSpec(id="n0", action="step_0", inputs=[InputSpec(name="value", reference="inputs.start")])]
    for index in range(1, nodes):
        specs.append(NodeSpec(id=f"n{index}", action=f"step_{index}",
                              inputs=[InputSpec(name="value", reference=f"n{index - 1}.result")]))
    return WorkflowSpec(name="pipeline", config=DagConfig(max_parallel_nodes=8, timeout_seconds=600), nodes=specs)


def timed_run(db: Path, nodes: int, *, incremental: bool, edited: int | None = None) -> tuple[float, dict[str, int]]:
    """One run in a new executor (as after a kernel restart): seconds, and nodes per status.
    ``edited``: that node's action has other code, as after editing its cell."""
    registry = ActionRegistry()
    for index in range(nodes):
        registry.register(f"step_{index}", step_changed if index == edited else step)
    executor = DagExecutor(registry, db=db, incremental=incremental)
    executor.add_workflow(pipeline(nodes))
    started = time.perf_counter()
    report = executor.run_sync("pipeline", inputs={"start": 0})
    elapsed = time.perf_counter() - started
    executor.close()
    if report.status != "succeeded":
        raise SystemExit(f"run failed: {report.error}")
    return elapsed, report.counts()


def one_round(nodes: int) -> dict[str, float]:
    """The four runs of a round, in a fresh folder; exits when statuses break reuse's promise."""
    middle = nodes // 2
    with tempfile.TemporaryDirectory() as folder:
        plain, _ = timed_run(Path(folder, "plain.db"), nodes, incremental=False)
        db = Path(folder, "runs.db")
        full, full_counts = timed_run(db, nodes, incremental=True)
        unchanged, unchanged_counts = timed_run(db, nodes, incremental=True)
        changed, changed_counts = timed_run(db, nodes, incremental=True, edited=middle)
    expected = [
        ("full", full_counts, {"succeeded": nodes}),
        ("unchanged", unchanged_counts, {"cached": nodes}),
        ("changed", changed_counts, {"cached": middle, "succeeded": nodes - middle}),
    ]
    for name, counts, wanted in expected:
        if counts != wanted:
            raise SystemExit(f"FAIL {name}: nodes per status {counts}, expected {wanted}")
    return {"plain": plain, "full": full, "unchanged": unchanged, "changed": changed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--node-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="one round (for the test suite)")
    args = parser.parse_args()
    global NODE_SECONDS
    NODE_SECONDS = args.node_ms / 1000
    rounds = 1 if args.small else args.rounds
    timed_run_warmup = tempfile.TemporaryDirectory()
    with timed_run_warmup as folder:  # imports and first-use costs belong to no contender
        timed_run(Path(folder, "warm.db"), 2, incremental=True)
    results = [one_round(args.nodes) for _ in range(rounds)]
    median = {name: statistics.median(r[name] for r in results) for name in results[0]}
    share = (args.nodes - args.nodes // 2) / args.nodes
    checks = [
        ("unchanged / full", median["unchanged"] / median["full"], 0.05),
        ("changed / full", median["changed"] / median["full"], share + 0.10),
        ("full / plain (fingerprinting overhead)", median["full"] / median["plain"], 1.15),
    ]
    print(f"{args.nodes} nodes of {args.node_ms:g} ms in a chain, {rounds} round(s), medians:")
    for name in ("plain", "full", "unchanged", "changed"):
        print(f"  {name:<10} {median[name] * 1000:9.1f} ms")
    missed = 0
    for name, ratio, target in checks:
        verdict = "ok" if ratio <= target else "MISSED"
        missed += verdict != "ok"
        print(f"  {name:<40} {ratio:6.3f}  (target <= {target:.3f})  {verdict}")
    print("all targets met" if not missed else f"{missed} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
