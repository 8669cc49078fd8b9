"""Kill each store with SIGKILL at random points and count what was lost, redone and stuck.

Runs the crash-matrix scenario of each paradigm (``tests/reliability/<paradigm>_scenario.py``)
at full size: 25 kills each, thousands of items. Each scenario runs its work in a child
process, SIGKILLs it at random points, reopens and continues each time, finishes, and reports

- ``lost``: acknowledged items missing at the end (must be 0);
- ``redone``: re-executions of finished items (must stay within ``in_flight_allowance``,
  the items that were in flight at the kills);
- ``stuck``: items that never reached an end state (must be 0).

Prints one row per paradigm and exits 1 on any violation (or a scenario that broke), 0 when
every scenario that ran kept its promises. A scenario module that does not exist yet is
skipped with a message saying so.

Usage::

    python bench/crash_matrix.py                       # 25 kills each, default sizes
    python bench/crash_matrix.py --kills 5 --items 500 --only agents,pubsub
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
#: ``dag_steps``: a supervisor loop whose steps add nodes at run time (items are its steps)
PARADIGMS = ("dag", "dag_steps", "agents", "pubsub")
#: thousands of items each; pub/sub items are cheap messages, so it gets more of them; a
#: supervisor step adds several tool nodes, so fewer of them make as much work
DEFAULT_ITEMS = {"dag": 2_000, "dag_steps": 60, "agents": 3_000, "pubsub": 30_000}
DEFAULT_KILLS = 25
COUNTS = ("kills", "items", "lost", "redone", "in_flight_allowance", "stuck")
#: counted by some scenarios only; each must be 0 when present
EXTRA_COUNTS = ("orphans",)


@dataclass
class Outcome:
    """What one paradigm's scenario reported, or why it did not run."""

    paradigm: str
    counts: dict[str, int] | None = None
    kills_asked: int = 0
    seconds: float = 0.0
    skipped: str = ""
    error: str = ""

    @property
    def problems(self) -> list[str]:
        """Each broken promise, as a phrase; empty when the scenario kept them all (or did not run)."""
        if self.error:
            return [self.error]
        if self.counts is None:
            return []
        counts = self.counts
        found = []
        if self.kills_asked > 0 and counts["kills"] == 0:
            found.append("no kill landed: the matrix tested nothing")
        if counts["lost"] > 0:
            found.append(f"{counts['lost']} acknowledged items lost")
        if counts["stuck"] > 0:
            found.append(f"{counts['stuck']} items stuck")
        if counts.get("orphans", 0) > 0:
            found.append(f"{counts['orphans']} nodes a killed step added were kept and added again")
        if counts["redone"] > counts["in_flight_allowance"]:
            found.append(
                f"{counts['redone']} finished items redone, more than the "
                f"{counts['in_flight_allowance']} in flight at the kills"
            )
        return found


def import_scenario(paradigm: str) -> ModuleType | None:
    """``tests.reliability.<paradigm>_scenario``, or None when that module does not exist yet."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    name = f"tests.reliability.{paradigm}_scenario"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name in (name, "tests", "tests.reliability"):
            return None
        raise  # the scenario exists but imports something missing: that is a failure


def run_one(
    paradigm: str, *, kills: int, items: int, seed: int, load: Callable[[str], ModuleType | None] = import_scenario
) -> Outcome:
    """Run one paradigm's crash matrix in a fresh temporary folder."""
    try:
        module = load(paradigm)
    except Exception:
        return Outcome(paradigm, error=f"cannot import its scenario:\n{traceback.format_exc()}")
    if module is None:
        return Outcome(paradigm, skipped=f"tests/reliability/{paradigm}_scenario.py does not exist yet")
    crash_matrix = getattr(module, "crash_matrix", None)
    if not callable(crash_matrix):
        return Outcome(paradigm, error=f"tests/reliability/{paradigm}_scenario.py has no crash_matrix()")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"crash-matrix-{paradigm}-") as workdir:
        try:
            counts = crash_matrix(kills=kills, items=items, workdir=Path(workdir), seed=seed)
        except Exception:
            return Outcome(
                paradigm, seconds=time.perf_counter() - started, error=f"the scenario raised:\n{traceback.format_exc()}"
            )
    seconds = time.perf_counter() - started
    missing = [key for key in COUNTS if not isinstance(counts.get(key) if isinstance(counts, dict) else None, int)]
    if missing:
        return Outcome(paradigm, seconds=seconds, error=f"its counts lack {', '.join(missing)}: {counts!r}")
    kept = {key: counts[key] for key in (*COUNTS, *EXTRA_COUNTS) if key in counts}
    return Outcome(paradigm, counts=kept, seconds=seconds, kills_asked=kills)


def render(outcomes: Sequence[Outcome]) -> str:
    """A plain-text table of the counts, then one line per problem or skip."""
    header = ("paradigm", *COUNTS, "seconds", "verdict")
    rows = [header]
    for outcome in outcomes:
        if outcome.counts is None:
            verdict = "SKIPPED" if outcome.skipped else "ERROR"
            rows.append((outcome.paradigm, *("-" for _ in COUNTS), f"{outcome.seconds:.1f}", verdict))
        else:
            verdict = "FAIL" if outcome.problems else "ok"
            counts = tuple(str(outcome.counts[key]) for key in COUNTS)
            rows.append((outcome.paradigm, *counts, f"{outcome.seconds:.1f}", verdict))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    for outcome in outcomes:
        if outcome.skipped:
            lines.append(f"{outcome.paradigm}: skipped: {outcome.skipped}")
        for key in EXTRA_COUNTS:
            if outcome.counts is not None and key in outcome.counts:
                lines.append(f"{outcome.paradigm}: {key} {outcome.counts[key]}")
        if outcome.counts is not None and 0 < outcome.counts["kills"] < outcome.kills_asked:
            landed, asked = outcome.counts["kills"], outcome.kills_asked
            lines.append(f"{outcome.paradigm}: note: {landed} of {asked} kills landed before the work ended")
        for problem in outcome.problems:
            lines.append(f"{outcome.paradigm}: FAIL: {problem}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, load: Callable[[str], ModuleType | None] = import_scenario) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=DEFAULT_KILLS, help="SIGKILLs per paradigm (default 25)")
    parser.add_argument("--items", type=int, default=None, help=f"items per paradigm (default {DEFAULT_ITEMS})")
    parser.add_argument(
        "--only", default=",".join(PARADIGMS), help=f"comma-separated paradigms to run (of {', '.join(PARADIGMS)})"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    options = parser.parse_args(argv)
    chosen = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PARADIGMS]
    if unknown or not chosen:
        parser.error(f"--only takes names among {', '.join(PARADIGMS)}; got {options.only!r}")
    if options.kills < 1 or (options.items is not None and options.items < 1):
        parser.error("--kills and --items must be positive")
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    print(f"crash matrix: {options.kills} kills per paradigm, seed {seed}", flush=True)
    outcomes = []
    for paradigm in chosen:
        items = options.items if options.items is not None else DEFAULT_ITEMS[paradigm]
        print(f"{paradigm}: {items} items ...", flush=True)
        outcomes.append(run_one(paradigm, kills=options.kills, items=items, seed=seed, load=load))
    print(render(outcomes))
    if any(outcome.problems for outcome in outcomes):
        return 1
    if all(outcome.skipped for outcome in outcomes):
        print("nothing ran: no scenario module exists yet")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
