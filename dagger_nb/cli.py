"""The ``dagger-nb`` command: validate, draw and run workflow files.

Every user mistake ends with a message and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

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

    run = commands.add_parser("run", help="run a workflow with live progress")
    run.add_argument("file", metavar="FILE", help="workflow YAML file")
    run.add_argument("--actions", required=True, action="append", metavar="PY_FILE_OR_MODULE",
                     help="a Python file or module whose @dagger_nb.action functions the workflow uses "
                          "(repeatable)")
    run.add_argument("--input", action="append", default=[], metavar="KEY=VALUE",
                     help="a run input; VALUE is read as JSON when it parses, else as text (repeatable)")
    run.add_argument("--db", metavar="PATH", help="record the run in this SQLite file")
    run.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    run.add_argument("--show-cache", action="store_true", help="also print the cache as a table")
    run.add_argument("--svg", metavar="OUT", help="write the run's graph, coloured by status, as SVG")
    run.set_defaults(command=_run)
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
        count = len(spec.nodes)
        print(f"{file}: ok: workflow '{spec.name}', {count} node{'' if count == 1 else 's'}")
    return 1 if failed else 0


def _graph(args: argparse.Namespace) -> int:
    spec = load_workflow(Path(args.file))
    dot = workflow_dot(spec)
    if args.output is None:
        sys.stdout.write(dot)
        return 0
    output = Path(args.output)
    if output.suffix == ".svg":
        text = render_svg(dot)
    elif output.suffix in (".dot", ".gv"):
        text = dot
    else:
        raise DaggerError(f"cannot write '{output}': the output must end in .svg or .dot")
    _write(output, text)
    print(f"wrote {output}")
    return 0


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise DaggerError(f"cannot write '{path}': {error.strerror or error}") from None


def _run(args: argparse.Namespace) -> int:
    from dagger_nb.dag.actions import default_registry
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.progress import ProgressLine, report_json, report_table

    for source in args.actions:
        _import_actions(source)
    inputs = dict(_parse_input(item) for item in args.input)
    executor = DagExecutor(default_registry, db=args.db)
    spec = executor.load_yaml_file(args.file)

    async def run() -> Any:
        async with executor:
            handle = executor.start(spec.name, inputs=inputs)
            progress = ProgressLine(handle.spec, stream=sys.stderr)
            handle.add_listener(progress.on_event)
            report = await handle
            return report

    report = anyio.run(run)
    executor.close()
    if args.json:
        print(report_json(report))
    else:
        print(report_table(report))
        if report.error:
            print(f"\n{report.status}: {report.error}")
        if args.show_cache:
            print("\nCache:")
            print(_cache_table(report.cache))
    if args.svg:
        _write(Path(args.svg), render_svg(report.to_dot()))
        print(f"\nwrote {args.svg}", file=sys.stderr)
    return 0 if report.success else 1


def _import_actions(source: str) -> None:
    """Import a module by name or run a ``.py`` file, so its ``@action`` decorators register."""
    try:
        if source.endswith(".py") or os.sep in source:
            path = Path(source)
            if not path.is_file():
                raise DaggerError(f"actions file '{source}' not found")
            module_spec = importlib.util.spec_from_file_location(f"dagger_nb_actions_{path.stem}", path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(source)
    except DaggerError:
        raise
    except ModuleNotFoundError as error:
        raise DaggerError(f"cannot import actions module '{source}': {error}") from None
    except Exception as error:  # the user's file failed while importing: show where, not our stack
        raise DaggerError(f"importing actions from '{source}' failed: {type(error).__name__}: {error}") from None


def _parse_input(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise DaggerError(f"--input '{item}' must look like KEY=VALUE")
    try:
        return key, json.loads(text)
    except json.JSONDecodeError:
        return key, text


def _cache_table(cache: Any) -> str:
    rows = [("namespace", "key", "type", "value")]
    rows += [(ns, key, type(value).__name__, _preview(value)) for ns, key, value in cache.items()]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    )


def _preview(value: Any) -> str:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return f"DataFrame {value.shape[0]}x{value.shape[1]} ({', '.join(map(str, value.columns))})"
    text = " ".join(repr(value).split())
    return text if len(text) <= 70 else text[:69] + "…"


if __name__ == "__main__":
    sys.exit(main())
