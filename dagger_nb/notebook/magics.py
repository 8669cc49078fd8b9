"""``%load_ext dagger_nb``: cell magics that define workflows, actions and agents, and run them.

Every magic parses its arguments, makes one call into the session, displays
the result, and raises :class:`~IPython.core.error.UsageError` (shown without a
traceback) on bad usage.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, SVG, display

from dagger_nb.dag import RunHandle
from dagger_nb.dag.dot import workflow_dot
from dagger_nb.dag.loader import parse_workflow
from dagger_nb.errors import DaggerError, GraphvizNotFound, Problem, SchemaValidationError, WorkflowSpecError
from dagger_nb.graph import render_svg
from dagger_nb.notebook._magic_args import parse_inputs, parse_mapping, parse_value, unquote
from dagger_nb.notebook.session import Session
from dagger_nb.schema import preload_jsonschema

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


@magics_class
class DaggerMagics(Magics):
    """The dagger-nb magics, working on one :class:`Session`."""

    def __init__(self, shell: InteractiveShell | None = None, *, session: Session) -> None:
        super().__init__(shell)
        self.session = session

    # -- defining ----------------------------------------------------------------------------

    @magic_arguments()
    @argument("name", nargs="?", help="workflow name (default: the YAML's `name:`)")
    @argument("--run", action="store_true", help="start a run in the background with a live dashboard")
    @argument("--inputs", nargs="+", action="extend", metavar="KEY=VALUE",
              help="run inputs: KEY=VALUE pairs (VALUE read as JSON when it parses) or one mapping "
                   "(\"{'x': 5}\", JSON, or a variable's name)")
    @argument("--wait", action="store_true", help="with --run: block until the run ends")
    @argument("--out", metavar="VAR", help="also store the RunHandle in VAR")
    @argument("--no-graph", action="store_true", help="do not display the structure graph")
    @argument("--incremental", action="store_true",
              help="with --run: reuse the stored results of unchanged nodes (they read `cached`)")
    @argument("--fresh", action="store_true", help="with --run: run every node (and store the results)")
    @cell_magic
    def dagger_workflow(self, line: str, cell: str) -> None:
        """Define (or replace) a workflow from the YAML in the cell; optionally run it.

        Problems are reported with the line numbers of the cell. With ``--run``
        the RunHandle is stored in ``_dagger_run`` (and in VAR with ``--out``).

        Example::

            %%dagger_workflow sums --run --inputs x=5
            nodes:
              - id: first
                action: add
                inputs: [{name: a, reference: inputs.x}, {name: b, value: 1}]
        """
        args = parse_argstring(self.dagger_workflow, line)
        if (args.wait or args.inputs or args.out) and not args.run:
            raise UsageError("--inputs, --wait and --out need --run")
        incremental = _incremental_choice(args, run=args.run)
        executor = self.session.executor
        try:
            spec = parse_workflow(
                cell, path="<cell>", actions=executor.registry, line_offset=1, default_name=args.name
            )
        except WorkflowSpecError as error:
            raise UsageError(_cell_problems(error.problems)) from None
        if args.name and spec.name != args.name:
            spec = spec.model_copy(update={"name": args.name})
        _call(executor.add_workflow, spec)
        if not args.no_graph:
            _display_graph(workflow_dot(spec))
        if args.run:
            inputs = self._inputs(args.inputs, "--inputs", line)
            self._start(lambda: self.session.start(spec.name, inputs=inputs, incremental=incremental,
                                                   fresh=args.fresh),
                        wait=args.wait, out=args.out)

    @magic_arguments()
    @argument("name", nargs="?", help="the function to register (default: the only one defined)")
    @cell_magic
    def dagger_action(self, line: str, cell: str) -> None:
        """Run the cell and register the function it defines as an action (re-running replaces it).

        Example::

            %%dagger_action
            def add(a, b):
                return a + b
        """
        args = parse_argstring(self.dagger_action, line)
        name, fn = self._define_function(cell, args.name, what="action")
        _call(self.session.registry.register, name, fn)

    @magic_arguments()
    @argument("name", help="agent name")
    @argument("--input-schema", metavar="MAPPING", help="the input JSON Schema (JSON, a dict literal or a variable)")
    @argument("--output-schema", metavar="MAPPING", help="the output JSON Schema (JSON, a dict literal or a variable)")
    @cell_magic
    def dagger_agent(self, line: str, cell: str) -> None:
        """Run the cell and register the function it defines as task agent NAME (replacing it).

        Example::

            %%dagger_agent summarise --input-schema "{'type': 'object'}"
            async def summarise(input, ctx):
                return {"summary": input["text"][:20]}
        """
        args = parse_argstring(self.dagger_agent, line)
        _, fn = self._define_function(cell, None, what="agent", prefer=args.name)
        options: dict[str, Any] = {}
        if args.input_schema:
            options["input_schema"] = parse_mapping(args.input_schema, option="--input-schema", namespace=self._ns)
        if args.output_schema:
            options["output_schema"] = parse_mapping(args.output_schema, option="--output-schema",
                                                     namespace=self._ns)
        from dagger_nb.agents import TaskAgent

        agent = _call(TaskAgent.from_function, fn, name=args.name, **options)
        _call(self.session.agents.register, args.name, agent)

    @magic_arguments()
    @argument("name", help="agent name")
    @argument("--subscribe", metavar="A,B", default="", help="channels the agent reads, comma-separated")
    @argument("--publish", metavar="C", default="", help="channels the agent writes, comma-separated")
    @cell_magic
    def dagger_pubsub_agent(self, line: str, cell: str) -> None:
        """Run the cell and register its function as pub/sub agent NAME (replacing it).

        Example::

            %%dagger_pubsub_agent shout --subscribe words --publish shouts
            async def shout(message, ctx):
                await ctx.publish("shouts", message.payload.upper())
        """
        args = parse_argstring(self.dagger_pubsub_agent, line)
        _, fn = self._define_function(cell, None, what="pub/sub agent", prefer=args.name)
        subscribe = [c.strip() for c in args.subscribe.split(",") if c.strip()]
        publish = [c.strip() for c in args.publish.split(",") if c.strip()]
        if not subscribe and not publish:
            raise UsageError("a pub/sub agent needs --subscribe and/or --publish channels")
        from dagger_nb.pubsub import PubSubAgent

        agent = _call(PubSubAgent, args.name, fn, subscribe=subscribe, publish=publish)
        _call(self.session.pubsub_agents.register, agent)
        bus = self.session.pubsub
        for node_id in bus.node_ids(args.name):  # re-running the cell replaces the subscriber
            _call(bus.unregister, node_id)
        _call(bus.register, args.name)

    # -- running -----------------------------------------------------------------------------

    @magic_arguments()
    @argument("name", help="the new job's id")
    @argument("--agent", required=True, help="the task agent that works on the objective")
    @argument("--input", nargs="+", action="extend", metavar="KEY=VALUE",
              help="the objective's input: KEY=VALUE pairs (VALUE read as JSON when it parses) or one mapping")
    @argument("--allow", metavar="A,B", help="agents the job may use, comma-separated (default: all registered)")
    @argument("--out", metavar="VAR", help="also store the JobHandle in VAR")
    @cell_magic
    def dagger_job(self, line: str, cell: str) -> None:
        """Create task job NAME with one objective (the cell's text is its description) for agent
        A, and start it in the background with a live dashboard (``_dagger_job`` holds the handle).

        Example::

            %%dagger_job essay --agent writer --input topic=bees words=300
            Write a short essay on the topic.
        """
        args = parse_argstring(self.dagger_job, line)
        description = cell.strip()
        if not description:
            raise UsageError("the cell is the objective's description: write what the job should achieve")
        inputs = self._inputs(args.input, "--input", line) or {}
        if args.out and not args.out.isidentifier():
            raise UsageError(f"--out needs a Python name, got {args.out!r}")
        allowed = [a.strip() for a in args.allow.split(",") if a.strip()] if args.allow else None
        handle = _call(self.session.start_objective, args.name, description, agent=args.agent, input=inputs,
                       allowed_agents=allowed)
        from dagger_nb.notebook.dashboards.job import JobDashboard

        dashboard = JobDashboard(self.session.task_manager, args.name, handle=handle)
        self.session.dashboards[args.name] = dashboard
        self._store(handle, "_dagger_job", args.out)
        display(dashboard)

    @magic_arguments()
    @argument("name", help="workflow name")
    @argument("--inputs", nargs="+", action="extend", metavar="KEY=VALUE",
              help="run inputs: KEY=VALUE pairs (VALUE read as JSON when it parses) or one mapping "
                   "(\"{'x': 5}\", JSON, or a variable's name)")
    @argument("--wait", action="store_true", help="block until the run ends")
    @argument("--out", metavar="VAR", help="also store the RunHandle in VAR")
    @argument("--incremental", action="store_true",
              help="reuse the stored results of unchanged nodes (they read `cached`)")
    @argument("--fresh", action="store_true", help="run every node (and store the results for the next run)")
    @line_magic
    def dagger_run(self, line: str) -> None:
        """Run workflow NAME in the background with a live dashboard (``_dagger_run`` holds the handle).

        Examples: ``%dagger_run sums --inputs x=5 --wait``, ``%dagger_run sums --inputs "{'x': 5}"``,
        ``%dagger_run sums --incremental`` (unchanged nodes are reused from ``.dagger-cache.db``)
        """
        args = parse_argstring(self.dagger_run, line)
        incremental = _incremental_choice(args, run=True)
        inputs = self._inputs(args.inputs, "--inputs", line)
        self._start(lambda: self.session.start(args.name, inputs=inputs, incremental=incremental,
                                               fresh=args.fresh),
                    wait=args.wait, out=args.out)

    @magic_arguments()
    @argument("run_id", nargs="?", help="id of a failed, paused or cancelled run "
              "(default: the session's latest paused or failed run)")
    @argument("--wait", action="store_true", help="block until the run ends")
    @argument("--out", metavar="VAR", help="also store the RunHandle in VAR")
    @line_magic
    def dagger_resume(self, line: str) -> None:
        """Resume a run: succeeded nodes keep their outputs, the others run again with the
        actions as registered now. Examples: ``%dagger_resume`` (the latest paused or failed
        run of the session), ``%dagger_resume 3f2a9c1b7d4e``"""
        args = parse_argstring(self.dagger_resume, line)
        run_id = args.run_id
        if run_id is None:
            latest = self.session.latest_resumable()
            if latest is None:
                raise UsageError("no paused or failed run in this session to resume; give a run id "
                                 "(%dagger_runs lists the runs)")
            run_id = latest.run_id
        self._start(lambda: self.session.start_resume(run_id), wait=args.wait, out=args.out)

    @magic_arguments()
    @argument("id", nargs="?", help="a run id, a job id, or `pubsub` (default: the latest run)")
    @line_magic
    def dagger_dashboard(self, line: str) -> None:
        """Show a live dashboard for a run or a task job, or ``pubsub``: the session's bus monitor.

        Examples: ``%dagger_dashboard my-job``, ``%dagger_dashboard pubsub``
        """
        args = parse_argstring(self.dagger_dashboard, line)
        from dagger_nb.notebook.dashboards.job import JobDashboard
        from dagger_nb.notebook.dashboards.pubsub import PubSubMonitor
        from dagger_nb.notebook.dashboards.run import RunDashboard

        dashboard: Any
        key = args.id
        if args.id is None:
            latest = self.session.latest()
            if latest is None:
                raise UsageError("no run was started in this session yet; give a run or job id")
            dashboard, key = RunDashboard(latest), latest.run_id
        elif args.id == "pubsub":
            dashboard = PubSubMonitor(self.session.pubsub, handle=self.session.pubsub_handle)
        elif self.session.knows_run(args.id):
            dashboard = RunDashboard(self.session.handle(args.id))
        elif args.id in self.session.job_ids():
            dashboard = JobDashboard(self.session.task_manager, args.id, handle=self.session.jobs.get(args.id))
        else:
            raise UsageError(f"no run or job with id '{args.id}' in this session")
        self.session.dashboards[key] = dashboard
        display(dashboard)

    @magic_arguments()
    @argument("id", help="a run id or a task job id")
    @argument("file", help="where to write: FILE.html (a self-contained page) or FILE.json")
    @line_magic
    def dagger_export(self, line: str) -> None:
        """Write a run's or a job's report (tracebacks, logs, graph, timeline) to a file.

        Examples: ``%dagger_export 3f2a91c0 run.html``, ``%dagger_export my-job job.json``
        """
        args = parse_argstring(self.dagger_export, line)
        from dagger_nb.notebook.dashboards.exporting import export

        print(_call(export, self.session, args.id, unquote(args.file)))

    @line_magic
    def dagger_respond(self, line: str) -> None:
        """Answer a question a run asks (``ctx.ask_human``). Example: ``%dagger_respond RUN_ID REQUEST_ID true``

        VALUE (the rest of the line) is parsed as JSON when it parses, else taken as text.
        """
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise UsageError("usage: %dagger_respond RUN_ID REQUEST_ID VALUE")
        run_id, request_id, text = parts
        if not self.session.knows_run(run_id):
            raise UsageError(f"no run with id '{run_id}' in this session")
        value = parse_value(text)
        if isinstance(value, str):
            value = unquote(value)
        try:
            self.session.handle(run_id).respond(request_id, value)
        except SchemaValidationError as error:
            raise UsageError(f"answer refused: {error}") from None
        except DaggerError as error:
            raise UsageError(str(error)) from None

    @line_magic
    def dagger_runs(self, line: str) -> Any:
        """The session's runs as a DataFrame, newest first. Example: ``%dagger_runs``"""
        if line.strip():
            raise UsageError("%dagger_runs takes no arguments")
        return self.session.runs_frame()

    @magic_arguments()
    @argument("namespace", nargs="?", help="only this namespace (a node id, or `inputs`)")
    @line_magic
    def dagger_cache(self, line: str) -> Any:
        """The session cache as a DataFrame (``namespace, key, value, type, updated_at``).

        Example: ``%dagger_cache first``
        """
        args = parse_argstring(self.dagger_cache, line)
        frame = self.session.cache.to_frame()
        if args.namespace is not None:
            frame = frame[frame["namespace"] == args.namespace].reset_index(drop=True)
        return frame

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _ns(self) -> dict[str, Any]:
        assert self.shell is not None
        return self.shell.user_ns

    def _start(self, start: Callable[[], RunHandle], *, wait: bool, out: str | None) -> None:
        if wait:
            shown: list[Any] = []
            self.session.wait_sync(lambda: _call(start), on_start=lambda handle: shown.append(self._show(handle, out)))
            shown[0].send_final_state()  # from this cell, which headless runners record
            return
        self._show(_call(start), out)

    def _show(self, handle: RunHandle, out: str | None) -> Any:
        """Display the run's dashboard and keep the handle in ``_dagger_run`` (and ``out``)."""
        from dagger_nb.notebook.dashboards.run import RunDashboard

        dashboard = RunDashboard(handle)
        self.session.dashboards[handle.run_id] = dashboard
        self._store(handle, "_dagger_run", out)
        display(dashboard)
        return dashboard

    def _store(self, handle: object, default: str, out: str | None) -> None:
        self._ns[default] = handle
        if out:
            if not out.isidentifier():
                raise UsageError(f"--out needs a Python name, got {out!r}")
            self._ns[out] = handle

    def _inputs(self, tokens: list[str] | None, option: str, line: str) -> Mapping[str, Any] | None:
        return parse_inputs(tokens, option=option, namespace=self._ns, line=line)

    def _define_function(
        self, cell: str, name: str | None, *, what: str, prefer: str | None = None
    ) -> tuple[str, Callable[..., Any]]:
        assert self.shell is not None
        cell = self.shell.transform_cell(cell)  # IPython syntax (magics, !commands) becomes Python
        try:
            tree = ast.parse(cell)
        except SyntaxError as error:
            raise UsageError(f"line {(error.lineno or 0) + 1}: {error.msg}") from None
        defined = [
            node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        if name is not None and name not in defined:
            raise UsageError(f"the cell defines no function named '{name}' (defined: {', '.join(defined) or 'none'})")
        if name is None:
            if prefer is not None and prefer in defined:
                name = prefer
            elif len(defined) == 1:
                name = defined[0]
            elif not defined:
                raise UsageError(f"the cell defines no function to register as {what}")
            else:
                raise UsageError(
                    f"the cell defines several functions ({', '.join(defined)}); name the one to register "
                    f"as {what} on the magic line"
                )
        # A leading newline keeps traceback line numbers those of the cell (line 1 is the magic).
        source = "\n" + cell
        code = compile(source, self.shell.compile.cache(source), "exec")
        exec(code, self.shell.user_global_ns, self.shell.user_ns)  # the user's errors keep their traceback
        fn = self.shell.user_ns[name]
        if not callable(fn) or not (inspect.isfunction(fn) or inspect.iscoroutinefunction(fn)):
            raise UsageError(f"'{name}' is not a function after running the cell")
        return name, fn


def _incremental_choice(args: Any, *, run: bool) -> bool | None:
    """``--incremental`` / ``--fresh`` as the run's ``incremental`` (None: the workflow's config decides)."""
    if (args.incremental or args.fresh) and not run:
        raise UsageError("--incremental and --fresh need --run")
    if args.incremental and args.fresh:
        raise UsageError("--incremental reuses stored results and --fresh runs every node: give one")
    return True if args.incremental else None


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call into the core; its errors become UsageError (a message, no traceback)."""
    try:
        return fn(*args, **kwargs)
    except DaggerError as error:
        raise UsageError(str(error)) from None


def _cell_problems(problems: list[Problem]) -> str:
    located = [Problem(None, p.line, p.workflow, p.node, p.message) for p in problems]
    return "the workflow cell has problems:\n" + "\n".join(f"  {p}" for p in located)


def _display_graph(dot: str) -> None:
    try:
        display(SVG(render_svg(dot)))
    except GraphvizNotFound as error:
        from html import escape

        display(HTML(f"<p>{escape(str(error))}</p><pre>{escape(dot)}</pre>"))


def load_magics(shell: InteractiveShell, session: Session) -> DaggerMagics:
    """Register the magics on ``shell``, working on ``session``."""
    preload_jsonschema()  # the first schema a cell uses must not stall the kernel on the import
    magics = DaggerMagics(shell, session=session)
    shell.register_magics(magics)
    return magics


