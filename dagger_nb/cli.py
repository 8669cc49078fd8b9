"""The ``dagger-nb`` command: validate, draw, run and resume workflow files.

Every user mistake ends with a message and exit code 1 (2 for missing run inputs
and bad usage), never a traceback; output to a closed pipe ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagger_nb.dag.loader import load_workflow
from dagger_nb.dag.spec import WorkflowSpec
from dagger_nb.errors import CommandLineError, DaggerError, WorkflowSpecError, describe_error

if TYPE_CHECKING:
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.run import RunHandle

#: Exit code of a run refused before it starts because run inputs are missing (argparse's usage code).
MISSING_INPUTS = 2
#: Where an incremental run without ``--db`` keeps its runs and stored results: this file beside
#: the workflow file (the name a notebook session uses in the notebook's folder).
DEFAULT_RESULTS_DB = ".dagger-cache.db"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dagger-nb`` console script; returns the exit code."""
    # Text from actions and workflow files may hold what the terminal cannot encode (a lone
    # surrogate from an undecodable file name): print it escaped, as stderr does.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.command(args))
        sys.stdout.flush()  # here, so a closed pipe is noticed while we can still end quietly
        return code
    except BrokenPipeError:
        # The reader went away (`dagger-nb run --json | head -1`): what is left to write goes nowhere,
        # and the interpreter's last flush must not report the closed pipe either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except DaggerError as error:
        print(f"error: {_printable(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagger-nb", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check workflow files and report every problem, "
                                                    "and list the run inputs each one needs")
    validate.add_argument("files", nargs="+", metavar="FILE", help="workflow YAML files")
    validate.add_argument("--actions", action="append", default=[], metavar="PY_FILE_OR_MODULE",
                          help="also check action names and each node's inputs against the signatures of the "
                               "@dagger_nb.action functions this file or module registers (repeatable)")
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
    run.add_argument("--db", metavar="PATH", help="record the run in this SQLite file (incremental runs: "
                                                   f"default {DEFAULT_RESULTS_DB} beside the workflow file)")
    reuse = run.add_mutually_exclusive_group()
    reuse.add_argument("--incremental", action="store_true",
                       help="reuse the stored result of every node whose code, inputs and settings are unchanged "
                            "(also on when the workflow sets config.enable_incremental_cache)")
    reuse.add_argument("--fresh", action="store_true",
                       help="run every node and store the results for the next incremental run")
    run.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    run.add_argument("--show-cache", action="store_true", help="also print the cache as a table")
    run.add_argument("--svg", metavar="OUT", help="write the run's graph, coloured by status, as SVG")
    run.set_defaults(command=_run)

    resume = commands.add_parser("resume", help="resume a paused or failed run recorded with --db")
    resume.add_argument("run_id", metavar="RUN_ID", help="the run to resume")
    resume.add_argument("--db", required=True, metavar="PATH", help="the SQLite file the run was recorded in")
    resume.add_argument("--actions", required=True, action="append", metavar="PY_FILE_OR_MODULE",
                        help="the actions, as for run (fixed ones are used from now on; repeatable)")
    resume.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    resume.add_argument("--show-cache", action="store_true", help="also print the cache as a table")
    resume.add_argument("--svg", metavar="OUT", help="write the run's graph, coloured by status, as SVG")
    resume.set_defaults(command=_resume, input=[])
    return parser


def _validate(args: argparse.Namespace) -> int:
    actions = None
    if args.actions:
        from dagger_nb.dag.actions import default_registry

        for source in args.actions:
            _import_actions(source)
        actions = default_registry
    failed = False
    for file in args.files:
        try:
            spec = load_workflow(Path(file), actions=actions)
        except WorkflowSpecError as error:
            failed = True
            print(_printable(str(error)), file=sys.stderr)
            continue
        count = len(spec.nodes)
        checked = ", actions checked" if actions is not None else ""
        print(_printable(f"{file}: ok: workflow '{spec.name}', {_plural(count, 'node')}{checked}"))
        needed = run_inputs(spec)
        listed = ", ".join(f"{key} ({', '.join(nodes)})" for key, nodes in needed.items())
        print(_printable(f"  run inputs: {listed or 'none'}"))
    return 1 if failed else 0


def _printable(text: str) -> str:
    """``text`` with what a terminal would act on (escape sequences, control characters, lone
    surrogates) written as Python escapes, as the loader shows values; line breaks are kept."""
    if text.isprintable() or all(char.isprintable() or char == "\n" for char in text):
        return text
    return "".join(
        char if char.isprintable() or char == "\n" else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def run_inputs(spec: WorkflowSpec) -> dict[str, list[str]]:
    """The run inputs ``spec`` reads (``inputs.KEY`` references), each with the nodes that read it."""
    needed: dict[str, list[str]] = {}
    for node in spec.nodes:
        for item in node.inputs:
            source = item.source
            if source is not None and source[0] == "inputs":
                readers = needed.setdefault(source[1], [])
                if node.id not in readers:
                    readers.append(node.id)
    return needed


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _graph(args: argparse.Namespace) -> int:
    # Imported here, as the run's modules are: `validate` (the quickest command) needs neither.
    from dagger_nb.dag.dot import workflow_dot
    from dagger_nb.graph import render_svg

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
        raise CommandLineError(f"cannot write '{output}': the output must end in .svg or .dot")
    _write(output, text)
    print(f"wrote {output}")
    return 0


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise CommandLineError(f"cannot write '{path}': {error.strerror or error}") from None


def _run(args: argparse.Namespace) -> int:
    from dagger_nb.dag.actions import default_registry

    for source in args.actions:
        _import_actions(source)
    inputs = dict(_parse_input(item) for item in args.input)
    # Checked before anything is opened: a refused file leaves no database or lock behind.
    spec = load_workflow(Path(args.file), actions=default_registry)
    missing = {key: nodes for key, nodes in run_inputs(spec).items() if key not in inputs}
    if missing:
        print(_printable(f"error: workflow '{spec.name}' needs run inputs that were not given (nothing was run):"),
              file=sys.stderr)
        for key, nodes in missing.items():
            print(_printable(f"  {key}  (read by {', '.join(nodes)})"), file=sys.stderr)
        example = " ".join(f"--input {key}=VALUE" for key in missing)
        print(_printable(f"give them with {example}"), file=sys.stderr)
        return MISSING_INPUTS
    incremental = args.incremental or args.fresh or spec.config.enable_incremental_cache
    if incremental and args.db is None:
        args.db = str(Path(args.file).parent / DEFAULT_RESULTS_DB)
        print(_printable(f"incremental run: runs and stored results in '{args.db}' (choose another file with --db)"),
              file=sys.stderr)
    return _drive(args, lambda executor: executor.start(
        executor.add_workflow(spec).name, inputs=inputs, incremental=True if args.incremental else None,
        fresh=args.fresh,
    ))


def _resume(args: argparse.Namespace) -> int:
    for source in args.actions:
        _import_actions(source)
    if not Path(args.db).is_file():
        raise CommandLineError(f"run database '{args.db}' not found")
    args.incremental = args.fresh = False
    return _drive(args, lambda executor: executor.start_resume(args.run_id))


def _drive(args: argparse.Namespace, start: Callable[[DagExecutor], RunHandle]) -> int:
    """Open an executor (on ``args.db``), ``start`` a run with it and show its progress and report;
    the executor is closed whatever happens."""
    from dagger_nb._loop import run_sync
    from dagger_nb.dag.actions import default_registry
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.progress import ProgressLine

    executor = DagExecutor(default_registry, db=args.db)
    try:
        async def drive() -> Any:
            async with executor:
                handle = start(executor)
                progress = ProgressLine(handle.spec, stream=sys.stderr)
                handle.add_listener(progress.on_event)
                return await handle

        report = run_sync(drive)  # the progress line listens from the start, so not executor.run_sync
    finally:
        executor.close()
    return _show(report, args)


def _show(report: Any, args: argparse.Namespace) -> int:
    """Print ``report`` as ``args`` ask; the exit code: 0 when the run succeeded, else 1."""
    from dagger_nb.dag.progress import report_json, report_table

    ending = _ending(report, args)
    if args.json:
        print(report_json(report))
        if ending:
            print(ending, file=sys.stderr)
    else:
        print(report_table(report))
        reuse = _reuse_summary(report)
        if reuse:
            print(f"\n{reuse}")
        if ending:
            print(f"\n{ending}")
        if args.show_cache:
            print("\nCache:")
            print(_cache_table(report.cache))
    if args.svg:
        from dagger_nb.graph import render_svg

        _write(Path(args.svg), render_svg(report.to_dot()))
        print(f"\nwrote {args.svg}", file=sys.stderr)
    return 0 if report.success else 1


def _reuse_summary(report: Any) -> str | None:
    """For an incremental run: which nodes were reused (and from which run), and why the others ran."""
    outcomes = [o for o in report.outcomes.values() if o.reason is not None or o.status == "cached"]
    if not outcomes:
        return None
    cached = [o for o in outcomes if o.status == "cached"]
    lines = [f"incremental: {len(cached)} of {_plural(len(report.outcomes), 'node')} cached"]
    lines += [f"  cached  {o.node}  (reused from run {o.cached_from})" for o in cached]
    lines += [f"  ran     {o.node}  ({o.reason})" for o in outcomes if o.status != "cached" and o.reason]
    return _printable("\n".join(lines))


def _ending(report: Any, args: argparse.Namespace) -> str | None:
    """The last line for a run that did not succeed: a paused run is a failure for a process,
    with how to go on."""
    if report.status != "paused":
        return f"{report.status}: {report.error}" if report.error else None
    if args.db:
        import shlex

        command = ["dagger-nb", "resume", report.run_id, "--db", args.db]
        for source in args.actions:
            command += ["--actions", source]
        how = f"resume with `{shlex.join(command)}` once the cause is fixed"
    else:
        how = "the run was not recorded; run again with --db FILE to be able to resume it"
    return f"failed (paused: {how}): {report.error}"


def _import_actions(source: str) -> None:
    """Import a module by name or run a ``.py`` file, so its ``@action`` decorators register."""
    try:
        if source.endswith(".py") or os.sep in source:
            path = Path(source)
            if not path.is_file():
                raise CommandLineError(f"actions file '{source}' not found")
            module_spec = importlib.util.spec_from_file_location(f"dagger_nb_actions_{path.stem}", path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(source)
    except DaggerError:
        raise
    except ModuleNotFoundError as error:
        raise CommandLineError(f"cannot import actions module '{source}': {error}") from None
    except Exception as error:  # the user's file failed while importing: show where, not our stack
        raise CommandLineError(f"importing actions from '{source}' failed: {describe_error(error)}") from None


def _parse_input(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise CommandLineError(f"--input '{item}' must look like KEY=VALUE")
    import json  # only `run --input` reads JSON: `validate` stays without it

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
