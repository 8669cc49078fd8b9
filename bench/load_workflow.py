"""Loading big workflows: libyaml's C parser against the pure-Python one, in the same run.

Each shape is a YAML text of N nodes: ``chain`` (each node depends on the one
before and reads its output) and ``fanout`` (one source, N-2 nodes reading it,
one sink reading all of them: a node with N-2 inputs). The time is
``load_workflow(text)`` as a user waits for it: parse, check every problem,
build the spec. The pure-Python parser is timed too (up to ``--python-up-to``
nodes: it takes minutes at 50k), and the ratio printed.

Also timed: a fan-out of ``--built`` nodes (100k by default) built in Python
(``NodeSpec``/``WorkflowSpec``) and checked with ``check_workflow``, as a
program that makes its workflow in code waits for it.

Targets: the 10k-node load under 1 s with libyaml, and at least 3x faster than
with the pure-Python parser; the 100k-node fan-out built and checked in under 2 s.
Exit 1 when one is missed.
Run: ``python bench/load_workflow.py``; a quick smoke run:
``python bench/load_workflow.py --sizes 200 1000 --rounds 1 --target-size 1000 --built 2000``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dagger_nb.dag import _yaml
from dagger_nb.dag.loader import load_workflow
from dagger_nb.dag.spec import InputSpec, NodeSpec, WorkflowSpec
from dagger_nb.dag.validation import check_workflow

TARGET_SECONDS = 1.0
TARGET_RATIO = 3.0
TARGET_BUILT_SECONDS = 2.0


def chain(nodes: int) -> str:
    lines = [f"name: chain_{nodes}", "nodes:", "  - {id: n0, action: step}"]
    for index in range(1, nodes):
        lines += [
            f"  - id: n{index}",
            "    action: step",
            f"    dependencies: [n{index - 1}]",
            "    inputs:",
            f"      - {{name: x, reference: n{index - 1}.result}}",
        ]
    return "\n".join(lines) + "\n"


def fanout(nodes: int) -> str:
    middle = nodes - 2
    lines = [f"name: fanout_{nodes}", "nodes:", "  - {id: source, action: step}"]
    lines += [f"  - {{id: m{index}, action: step, dependencies: [source]}}" for index in range(middle)]
    lines += ["  - id: sink", "    action: gather", "    inputs:"]
    lines += [f"      - {{name: x{index}, reference: m{index}.result}}" for index in range(middle)]
    return "\n".join(lines) + "\n"


def built_fanout(nodes: int) -> tuple[float, float, float]:
    """Seconds to build a fan-out of ``nodes`` nodes in Python, to check it, and CPU seconds of both."""
    middle = nodes - 2
    started, started_cpu = time.perf_counter(), time.process_time()
    spec = WorkflowSpec(
        name=f"fanout_{nodes}",
        nodes=[
            NodeSpec(id="source", action="step"),
            *(NodeSpec(id=f"m{index}", action="step", dependencies=["source"]) for index in range(middle)),
            NodeSpec(
                id="sink",
                action="gather",
                inputs=[InputSpec(name=f"x{index}", reference=f"m{index}.result") for index in range(middle)],
            ),
        ],
    )
    built = time.perf_counter()
    problems = list(check_workflow(spec, actions={"step", "gather"}))
    checked, checked_cpu = time.perf_counter(), time.process_time()
    if problems:
        raise SystemExit(f"the generated fan-out has problems: {problems[:3]}")
    return built - started, checked - built, checked_cpu - started_cpu


@contextmanager
def pure_python_parser() -> Iterator[None]:
    fast, _yaml.FastSpecLoader = _yaml.FastSpecLoader, None
    try:
        yield
    finally:
        _yaml.FastSpecLoader = fast


def seconds(text: str, rounds: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``load_workflow(text)`` over ``rounds``.

    The CPU time shows how much of the wait was this process's work when the
    machine is busy with other processes.
    """
    walls, cpus = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        load_workflow(text)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - started_cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--rounds", type=int, default=3, help="median of this many loads per size")
    parser.add_argument("--python-up-to", type=int, default=10_000, help="largest size timed with pure Python")
    parser.add_argument("--target-size", type=int, default=10_000, help="the size the targets apply to")
    parser.add_argument("--built", type=int, default=100_000, help="nodes of the fan-out built in Python")
    args = parser.parse_args()
    if _yaml.FastSpecLoader is None:
        print("libyaml is not installed: only the pure-Python parser is available. MISSED")
        return 1
    shapes: dict[str, Callable[[int], str]] = {"chain": chain, "fanout": fanout}
    missed: list[str] = []
    for size in args.sizes:
        for shape, make in shapes.items():
            text = make(size)
            fast, fast_cpu = seconds(text, args.rounds)
            line = f"{shape}_{size}: {len(text) / 1e6:.1f} MB, libyaml {fast:.3f} s (CPU {fast_cpu:.3f} s)"
            if size <= args.python_up_to:
                with pure_python_parser():
                    slow, slow_cpu = seconds(text, 1)
                ratio = slow / fast
                line += f", pure Python {slow:.3f} s (CPU {slow_cpu:.3f} s), ratio {ratio:.1f}x"
                if size == args.target_size and ratio < TARGET_RATIO:
                    missed.append(f"{shape}_{size} ratio {ratio:.1f}x < {TARGET_RATIO}x")
            if size == args.target_size and fast > TARGET_SECONDS:
                missed.append(f"{shape}_{size} load {fast:.3f} s > {TARGET_SECONDS} s")
            print(line, flush=True)
    build, check, cpu = built_fanout(args.built)
    print(f"fanout_{args.built} built in Python: build {build:.3f} s, check {check:.3f} s (CPU {cpu:.3f} s)",
          flush=True)
    if build + check > TARGET_BUILT_SECONDS:
        missed.append(f"fanout_{args.built} built and checked in {build + check:.3f} s > {TARGET_BUILT_SECONDS} s")
    verdict = "MISSED: " + "; ".join(missed) if missed else "met"
    print(f"targets: {args.target_size}-node load < {TARGET_SECONDS} s and >= {TARGET_RATIO}x pure Python, "
          f"{args.built}-node fan-out built and checked < {TARGET_BUILT_SECONDS} s: {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
