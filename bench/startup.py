"""Start-up: what a user waits for before the first line of work, each in a fresh process.

    python bench/startup.py [--rounds 7]

Measured in one run, the programs interleaved round by round (so a busy spell of a
shared machine slows all of them alike), median of the rounds, wall time of the
whole child process as a shell would see it:

- ``bare python``: ``python -c pass``, the floor every program pays;
- ``plain asyncio``: three asyncio tasks, each awaiting the one before, printing the result;
- ``import dagger_nb``;
- ``3-node first result``: import, register three actions, load a 3-node YAML chain,
  run it and print the sink's value (what a script or a fresh kernel waits for);
- ``dagger-nb validate``: the CLI checking a small workflow file.

Each program runs once before the rounds, with its bytecode cached in a folder of this
run (``PYTHONPYCACHEPREFIX``; ``PYTHONDONTWRITEBYTECODE`` is dropped for the children): an
installed package has its modules compiled, so compiling them is no part of a start-up.

Targets (issue 26): import under 0.3 s, first result under 0.4 s, validate under
0.5 s. Ratios to the bare interpreter and to the plain asyncio program are printed
beside them, so a slow machine shows as a slow baseline. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKFLOW = """\
name: three
nodes:
  - id: a
    action: add
    inputs: [{name: x, reference: inputs.x}]
  - id: b
    action: add
    dependencies: [a]
    inputs: [{name: x, reference: a.result}]
  - id: c
    action: add
    dependencies: [b]
    inputs: [{name: x, reference: b.result}]
"""

FIRST_RESULT = """\
import sys
from dagger_nb import ActionRegistry, DagExecutor

async def add(x):
    return x + 1

registry = ActionRegistry()
registry.register("add", add)
executor = DagExecutor(registry)
executor.load_yaml_file(sys.argv[1])
report = executor.run_sync("three", inputs={"x": 1})
print(report.cache.get("c", "result"))
"""

PLAIN_ASYNCIO = """\
import asyncio

async def add(x):
    return x + 1

async def main():
    loop = asyncio.get_running_loop()
    futures = {name: loop.create_future() for name in "abc"}

    async def node(name, before, start):
        value = await futures[before] if before else start
        futures[name].set_result(await add(value))

    await asyncio.gather(node("a", None, 1), node("b", "a", 0), node("c", "b", 0))
    print(futures["c"].result())

asyncio.run(main())
"""

VALIDATE = "import sys\nfrom dagger_nb.cli import main\nsys.exit(main(['validate', sys.argv[1]]))\n"

TARGETS = {"import dagger_nb": 0.3, "3-node first result": 0.4, "dagger-nb validate": 0.5}


def programs(workflow: Path) -> dict[str, tuple[list[str], str | None]]:
    """Each measured program: its command line and the stdout it must print (None: not checked)."""
    python = sys.executable
    return {
        "bare python": ([python, "-c", "pass"], ""),
        "plain asyncio": ([python, "-c", PLAIN_ASYNCIO], "4\n"),
        "import dagger_nb": ([python, "-c", "import dagger_nb"], ""),
        "3-node first result": ([python, "-c", FIRST_RESULT, str(workflow)], "4\n"),
        "dagger-nb validate": ([python, "-c", VALIDATE, str(workflow)], None),
    }


def run_once(command: list[str], expected: str | None, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or (expected is not None and done.stdout != expected):
        sys.exit(f"{command[:3]} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="fresh processes per program (median kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workflow = Path(folder) / "three.yaml"
        workflow.write_text(WORKFLOW)
        measured = programs(workflow)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "bytecode")
        times: dict[str, list[float]] = {name: [] for name in measured}
        for command, expected in measured.values():  # warm the file cache and compile the bytecode first
            run_once(command, expected, env)
        for _ in range(args.rounds):
            for name, (command, expected) in measured.items():
                times[name].append(run_once(command, expected, env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    bare, plain = medians["bare python"], medians["plain asyncio"]
    print(f"{'program':<22}{'median s':>10}{'x bare':>9}{'x asyncio':>11}{'target s':>10}  verdict")
    missed = []
    for name, seconds in medians.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("met" if seconds <= target else "MISSED")
        if verdict == "MISSED":
            missed.append(f"{name}: {seconds:.3f} s > {target} s")
        print(
            f"{name:<22}{seconds:>10.3f}{seconds / bare:>9.2f}{seconds / plain:>11.2f}"
            f"{'' if target is None else f'{target:.1f}':>10}  {verdict}"
        )
    print(
        f"rounds: {args.rounds}; dagger-nb's share of the first result beyond plain asyncio: "
        f"{medians['3-node first result'] - plain:.3f} s"
    )
    for line in missed:
        print(f"TARGET MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
