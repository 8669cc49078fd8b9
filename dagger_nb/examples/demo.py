"""``make demo``: validate the bundled workflows, then run the sales pipeline with live progress.

    python -m dagger_nb.examples.demo [--out FOLDER]

Prints the outcome table and the cache, and writes the run's graph as SVG into FOLDER
(default: a new temporary folder; ``make demo`` passes ``demo-output``, which git ignores),
and says where.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from dagger_nb import cli

EXAMPLES = Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", metavar="FOLDER", help="folder for the SVG graph (default: a new temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="dagger-nb-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    workflows = sorted(str(path) for path in EXAMPLES.glob("*.yaml"))
    print("== Validating the bundled workflows")
    if cli.main(["validate", *workflows]) != 0:
        return 1
    print("\n== Running the sales pipeline")
    code = cli.main([
        "run", str(EXAMPLES / "sales_pipeline.yaml"),
        "--actions", "dagger_nb.examples.sales_actions",
        "--input", "rows=500", "--input", "seed=7",
        "--show-cache", "--svg", str(out / "sales_pipeline.svg"),
    ])
    print(f"\n== The demo's files are in {out.resolve()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
