"""The ``dagger-nb`` command: validate, draw and run workflow files.

Every user mistake ends with a message and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dagger_nb.dag.dot import workflow_dot
from dagger_nb.dag.loader import load_workflow
from dagger_nb.errors import DaggerError, WorkflowSpecError
from dagger_nb.graph import render_svg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dagger-nb`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.command(args))
    except DaggerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagger-nb", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check workflow files and report every problem")
    validate.add_argument("files", nargs="+", metavar="FILE", help="workflow YAML files")
    validate.set_defaults(command=_validate)

    graph = commands.add_parser("graph", help="draw a workflow's structure as DOT or SVG")
    graph.add_argument("file", metavar="FILE", help="workflow YAML file")
    graph.add_argument("-o", "--output", metavar="OUT", help="write to OUT.svg or OUT.dot (default: DOT on stdout)")
    graph.set_defaults(command=_graph)
    return parser


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for file in args.files:
        try:
            spec = load_workflow(Path(file))
        except WorkflowSpecError as error:
            failed = True
            print(error, file=sys.stderr)
            continue
        print(f"{file}: ok: workflow '{spec.name}', {len(spec.nodes)} nodes")
    return 1 if failed else 0


def _graph(args: argparse.Namespace) -> int:
    spec = load_workflow(Path(args.file))
    dot = workflow_dot(spec)
    if args.output is None:
        sys.stdout.write(dot)
        return 0
    output = Path(args.output)
    if output.suffix == ".svg":
        output.write_text(render_svg(dot), encoding="utf-8")
    elif output.suffix in (".dot", ".gv"):
        output.write_text(dot, encoding="utf-8")
    else:
        raise DaggerError(f"cannot write '{output}': the output must end in .svg or .dot")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
