"""The magics, driven through a real IPython InteractiveShell on the test's event loop."""

from __future__ import annotations

import anyio
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import dagger_nb
from dagger_nb.dag.events import HumanInputRequested
from dagger_nb.notebook import JobDashboard, RunDashboard
from dagger_nb.notebook.magics import DaggerMagics
from dagger_nb.notebook.session import Session
from tests.notebook.conftest import run
from tests.notebook.helpers import ADD_ACTION, sums

pytestmark = pytest.mark.anyio


# -- %load_ext and help --------------------------------------------------------------------------


def test_load_ext_registers_every_magic(shell: InteractiveShell) -> None:
    dagger_nb.load_ipython_extension(shell)
    magics = shell.magics_manager.magics
    assert {"dagger_workflow", "dagger_action", "dagger_agent", "dagger_pubsub_agent"} <= set(magics["cell"])
    assert {"dagger_run", "dagger_resume", "dagger_dashboard", "dagger_runs", "dagger_cache", "dagger_respond"} <= set(
        magics["line"]
    )


def test_importing_registers_nothing(shell: InteractiveShell) -> None:
    # A second shell, never given the extension. It is not IPython's singleton: clearing that would
    # leave later tests with no get_ipython() (and tracebacks with no "Cell In[N]" labels).
    fresh = InteractiveShell()
    import dagger_nb.notebook  # noqa: F401

    assert "dagger_workflow" not in fresh.magics_manager.magics["cell"]
    assert InteractiveShell.instance() is shell


@pytest.mark.parametrize(
    "magic, words",
    [
        ("dagger_workflow", ["--run", "--inputs", "--wait", "--out", "--no-graph"]),
        ("dagger_run", ["--inputs", "--wait"]),
        ("dagger_agent", ["--input-schema", "--output-schema"]),
        ("dagger_pubsub_agent", ["--subscribe", "--publish"]),
    ],
)
def test_help_lists_the_options(magic: str, words: list[str]) -> None:
    doc = getattr(DaggerMagics, magic).__doc__
    for word in words:
        assert word in doc


# -- %%dagger_action -----------------------------------------------------------------------------


async def test_action_cell_registers_and_rerun_replaces(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, ADD_ACTION)
    first = magics.session.registry.get("add").fn
    run(shell, ADD_ACTION.replace("a + b", "a + b + 100"))
    second = magics.session.registry.get("add").fn
    assert first is not second
    assert await second(1, 2) == 103


async def test_action_name_picks_one_of_several(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, "%%dagger_action double\ndef helper(x):\n    return x\n\ndef double(x):\n    return 2 * helper(x)\n")
    assert magics.session.registry.names() == ["double"]
    assert magics.session.registry.get("double").fn(4) == 8


@pytest.mark.parametrize(
    "cell, message",
    [
        ("%%dagger_action\nx = 1\n", "the cell defines no function to register as action"),
        ("%%dagger_action\ndef a():\n    pass\ndef b():\n    pass\n", r"several functions \(a, b\)"),
        ("%%dagger_action c\ndef a():\n    pass\n", "no function named 'c' \\(defined: a\\)"),
        ("%%dagger_action\ndef a(:\n", "line 2: invalid syntax"),
    ],
    ids=["no-function", "several", "wrong-name", "syntax"],
)
async def test_action_usage_errors(shell: InteractiveShell, magics: DaggerMagics, cell: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run(shell, cell)


async def test_action_cell_errors_keep_their_traceback(shell: InteractiveShell, magics: DaggerMagics) -> None:
    with pytest.raises(ZeroDivisionError):
        run(shell, "%%dagger_action\n1 / 0\ndef f():\n    pass\n")
    assert "f" not in magics.session.registry


# -- %%dagger_workflow ---------------------------------------------------------------------------


async def test_workflow_cell_registers_and_rerun_replaces(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph"))
    assert [n.id for n in magics.session.executor.workflow("sums").nodes] == ["first", "second"]
    run(shell, "%%dagger_workflow sums --no-graph\nnodes:\n"
               "  - {id: only, action: add, inputs: [{name: a, value: 1}, {name: b, value: 2}]}\n")
    assert [n.id for n in magics.session.executor.workflow("sums").nodes] == ["only"]


async def test_workflow_cell_displays_the_structure_graph(shell: InteractiveShell, magics: DaggerMagics,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[object] = []
    monkeypatch.setattr("dagger_nb.notebook.magics.display", shown.append)
    run(shell, ADD_ACTION)
    run(shell, sums())
    assert len(shown) == 1 and "<svg" in shown[0].data  # type: ignore[attr-defined]


async def test_workflow_graph_without_graphviz_is_a_note_and_the_dot(
    shell: InteractiveShell, magics: DaggerMagics, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[object] = []
    monkeypatch.setattr("dagger_nb.notebook.magics.display", shown.append)
    monkeypatch.setattr("shutil.which", lambda name: None)
    run(shell, ADD_ACTION)
    run(shell, sums())
    html = shown[0].data  # type: ignore[attr-defined]
    assert "Graphviz" in html and "digraph" in html and "&quot;first&quot;" in html


@pytest.mark.parametrize(
    "body, message",
    [
        ("nodes:\n  - id: a\n    action: nope\n", r"line 4: workflow 'w', node 'a': unknown action 'nope'"),
        ("nodes: [\n", r"line 3: invalid YAML"),
        (
            "nodes:\n  - {id: a, action: add}\n  - id: b\n    action: add\n    inputs: [{name: x, reference: zz.y}]\n",
            r"line 6: workflow 'w', node 'b': input 'x' references unknown node 'zz'",
        ),
        (
            "nodes:\n  - id: a\n    action: add\n    inputs: [{name: a, value: 1}, {name: c, value: 2}]\n",
            r"line 5: workflow 'w', node 'a': input 'c' is not a parameter of action 'add' \(parameters: a, b\)",
        ),
    ],
    ids=["unknown-action", "bad-yaml", "bad-reference", "not-a-parameter"],
)
async def test_workflow_problems_use_cell_line_numbers(
    shell: InteractiveShell, magics: DaggerMagics, body: str, message: str
) -> None:
    run(shell, ADD_ACTION)
    with pytest.raises(UsageError, match=message):
        run(shell, f"%%dagger_workflow w --no-graph\n{body}")


async def test_usage_error_is_shown_without_traceback(
    shell: InteractiveShell, magics: DaggerMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_cell("%%dagger_workflow w --no-graph\nnodes: [\n", store_history=False)
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "UsageError" in text and "invalid YAML" in text and "Traceback" not in text


@pytest.mark.parametrize(
    "options, message",
    [
        ("--wait", "--inputs, --wait and --out need --run"),
        ("--run --inputs undefined_name", "--inputs undefined_name: no variable named 'undefined_name'"),
        ("--run --inputs [1]", "--inputs: '\\[1\\]' is not KEY=VALUE"),
        ("--run --inputs \"[1]\"", "--inputs: '\\[1\\]' is not KEY=VALUE"),
        ("--run --inputs \"{1: 2}\"", "every key of the mapping must be text"),
        ("--run --out 1x", "--out needs a Python name"),
        ("--bogus", "unrecognized arguments: --bogus"),
    ],
)
async def test_workflow_option_errors(
    shell: InteractiveShell, magics: DaggerMagics, options: str, message: str
) -> None:
    run(shell, ADD_ACTION)
    with pytest.raises(UsageError, match=message):
        run(shell, sums(f"--no-graph {options}"))


async def test_workflow_run_starts_in_background_with_a_dashboard(
    shell: InteractiveShell, magics: DaggerMagics
) -> None:
    run(shell, ADD_ACTION)
    shell.user_ns["params"] = {"x": 5}
    run(shell, sums("--no-graph --run --inputs params --out mine"))
    handle = shell.user_ns["_dagger_run"]
    assert shell.user_ns["mine"] is handle
    assert not handle.done  # the cell returned at once
    report = await handle.wait()
    assert report.status == "succeeded"
    assert magics.session.cache.get("second", "result") == 16
    dashboard = magics.session.dashboards[handle.run_id]
    assert isinstance(dashboard, RunDashboard) and "succeeded" in dashboard.header.value


async def test_workflow_run_wait_blocks_until_done(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph --run --inputs \"{'x': 1}\" --wait"))
    handle = shell.user_ns["_dagger_run"]
    assert handle.done and handle.status == "succeeded"
    assert magics.session.cache.get("second", "result") == 12


# -- %dagger_run / %dagger_resume ----------------------------------------------------------------


async def test_run_magic(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph"))
    run(shell, "%dagger_run sums --inputs \"{'x': 2}\" --wait")
    assert shell.user_ns["_dagger_run"].status == "succeeded"
    assert magics.session.cache.get("second", "result") == 13


async def test_two_concurrent_runs_each_see_their_own_inputs(shell: InteractiveShell, magics: DaggerMagics) -> None:
    """Every ``%dagger_run`` of a session shares the session's cache: two runs started at once (the
    first still running when the second starts) each read their own ``inputs.x``."""
    started, gate, seen = [anyio.Event(), anyio.Event()], anyio.Event(), {}
    shell.user_ns.update(started=list(started), gate=gate, seen=seen)
    run(shell, "%%dagger_action\nasync def hold():\n    started.pop(0).set()\n    await gate.wait()\n")
    run(shell, "%%dagger_action\ndef read(x, ctx):\n    seen[ctx.run_id] = (x, ctx.cache.get('inputs', 'x'))\n")
    run(shell, "%%dagger_workflow reads --no-graph\nnodes:\n  - {id: hold, action: hold}\n"
               "  - {id: read, action: read, dependencies: [hold], inputs: [{name: x, reference: inputs.x}]}\n")
    with anyio.fail_after(30):
        run(shell, "%dagger_run reads --inputs \"{'x': 1}\" --out one")
        await started[0].wait()
        run(shell, "%dagger_run reads --inputs \"{'x': 2}\" --out two")
        await started[1].wait()
        gate.set()
        one, two = shell.user_ns["one"], shell.user_ns["two"]
        first, second = await one, await two
    assert first.success and second.success
    assert seen == {one.run_id: (1, 1), two.run_id: (2, 2)}
    assert first.cache.get("inputs", "x") == 1 and second.cache.get("inputs", "x") == 2
    assert "inputs" not in magics.session.cache.namespaces()


@pytest.mark.parametrize("options", ["", " --wait"])
async def test_run_unknown_workflow_is_a_usage_error(
    shell: InteractiveShell, magics: DaggerMagics, options: str
) -> None:
    with pytest.raises(UsageError, match=r"unknown workflow 'nope' \(known: none\)"):
        run(shell, f"%dagger_run nope{options}")


async def test_fix_an_action_and_resume(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, "%%dagger_action\ndef check(x):\n    raise ValueError(f'bad {x}')\n")
    run(shell, ADD_ACTION)
    run(
        shell,
        "%%dagger_workflow w --no-graph --run --wait\nconfig: {on_failure: Pause, max_attempts: 1}\nnodes:\n"
        "  - {id: one, action: add, inputs: [{name: a, value: 1}, {name: b, value: 2}]}\n"
        "  - {id: two, action: check, inputs: [{name: x, reference: one.result}]}\n",
    )
    failed = shell.user_ns["_dagger_run"]
    assert failed.status == "paused" and "bad 3" in (failed.report.error or "")
    run(shell, "%%dagger_action\ndef check(x):\n    return x * 10\n")
    shell.user_ns["rid"] = failed.run_id
    run(shell, "%dagger_resume $rid --out again")
    resumed = shell.user_ns["again"]
    report = await resumed.wait()
    assert report.status == "succeeded" and magics.session.cache.get("two", "result") == 30


@pytest.mark.parametrize(
    "line, message",
    [("%dagger_resume nope", "no run with id 'nope'"),
     ("%dagger_resume", "no paused or failed run in this session to resume; give a run id")],
)
async def test_resume_usage_errors(shell: InteractiveShell, magics: DaggerMagics, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run(shell, line)


async def test_resume_of_a_succeeded_run_is_a_usage_error(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph --run --inputs \"{'x': 1}\" --wait"))
    shell.user_ns["rid"] = shell.user_ns["_dagger_run"].run_id
    with pytest.raises(UsageError, match="is succeeded; only paused, failed"):
        run(shell, "%dagger_resume $rid")


# -- %dagger_dashboard / %dagger_runs / %dagger_cache --------------------------------------------


async def test_dashboard_magic(shell: InteractiveShell, magics: DaggerMagics, monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[object] = []
    with pytest.raises(UsageError, match="no run was started in this session yet"):
        run(shell, "%dagger_dashboard")
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph --run --inputs \"{'x': 1}\" --wait"))
    monkeypatch.setattr("dagger_nb.notebook.magics.display", shown.append)
    run(shell, "%dagger_dashboard")
    handle = shell.user_ns["_dagger_run"]
    shell.user_ns["rid"] = handle.run_id
    run(shell, "%dagger_dashboard $rid")
    assert [type(d) for d in shown] == [RunDashboard, RunDashboard]
    assert all(d.handle.run_id == handle.run_id for d in shown)  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="no run or job with id 'zzz' in this session"):
        run(shell, "%dagger_dashboard zzz")


async def test_dashboard_magic_for_a_job(shell: InteractiveShell, magics: DaggerMagics,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[object] = []
    monkeypatch.setattr("dagger_nb.notebook.magics.display", shown.append)
    run(shell, "%%dagger_agent echo\nasync def echo(input, ctx):\n    return {'echo': input}\n")
    manager = magics.session.task_manager
    manager.add_objective("j1", "say it", "echo", {"text": "hi"})
    handle = magics.session.start_job("j1")
    await handle.wait()
    run(shell, "%dagger_dashboard j1")
    assert isinstance(shown[0], JobDashboard)
    assert "completed" in shown[0].header.value


async def test_runs_and_cache_magics(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph --run --inputs \"{'x': 1}\" --wait"))
    run(shell, "%dagger_run sums --inputs \"{'x': 2}\" --wait")
    runs = run(shell, "%dagger_runs")
    assert isinstance(runs, pd.DataFrame)
    assert list(runs["status"]) == ["succeeded", "succeeded"]
    assert runs.loc[0, "run_id"] == shell.user_ns["_dagger_run"].run_id  # newest first
    cache = run(shell, "%dagger_cache")
    assert set(cache["namespace"]) == {"first", "second"}  # outputs: a run's inputs are the run's own
    second = run(shell, "%dagger_cache second")
    assert second[["key", "value"]].values.tolist() == [["result", 13]]
    with pytest.raises(UsageError, match="takes no arguments"):
        run(shell, "%dagger_runs extra")


# -- %%dagger_agent / %%dagger_pubsub_agent ------------------------------------------------------


async def test_agent_cell_registers_with_schemas_and_rerun_replaces(
    shell: InteractiveShell, magics: DaggerMagics
) -> None:
    cell = (
        "%%dagger_agent shout --input-schema \"{'type': 'object', 'required': ['text']}\"\n"
        "async def shout(input, ctx):\n    return {'text': input['text'].upper()}\n"
    )
    run(shell, cell)
    first = magics.session.agents.get("shout")
    assert first.input_schema is not None and first.input_schema.is_valid({"text": "a"})
    run(shell, cell.replace("upper", "lower"))
    assert magics.session.agents.get("shout") is not first


@pytest.mark.parametrize(
    "cell, message",
    [
        ("%%dagger_agent a --input-schema \"{'type': 'nonsense'}\"\ndef a(input, ctx):\n    pass\n", "schema"),
        ("%%dagger_agent a\nx = 1\n", "defines no function to register as agent"),
        ("%%dagger_agent\ndef a(input, ctx):\n    pass\n", "the following arguments are required: name"),
    ],
    ids=["bad-schema", "no-function", "no-name"],
)
async def test_agent_usage_errors(shell: InteractiveShell, magics: DaggerMagics, cell: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run(shell, cell)


async def test_pubsub_agent_cell_registers_on_the_bus_and_rerun_replaces(
    shell: InteractiveShell, magics: DaggerMagics
) -> None:
    cell = (
        "%%dagger_pubsub_agent shout --subscribe words,more --publish shouts\n"
        "async def shout(message, ctx):\n    await ctx.publish('shouts', message.payload.upper())\n"
    )
    run(shell, cell)
    run(shell, cell)
    bus = magics.session.pubsub
    assert len(bus.node_ids("shout")) == 1
    agent = magics.session.pubsub_agents.get("shout")
    assert agent.subscribe == ("words", "more") and agent.publish == ("shouts",)
    await bus.publish("words", "hi")
    await bus.run(until_idle=True)
    assert bus.history_frame("shouts")["payload"].tolist() == ["HI"]


async def test_pubsub_agent_needs_channels(shell: InteractiveShell, magics: DaggerMagics) -> None:
    with pytest.raises(UsageError, match="needs --subscribe and/or --publish"):
        run(shell, "%%dagger_pubsub_agent a\nasync def a(message, ctx):\n    pass\n")


async def test_workflow_name_on_the_magic_line_wins(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, ADD_ACTION)
    run(shell, "%%dagger_workflow renamed --no-graph\nname: original\nnodes:\n"
               "  - {id: a, action: add, inputs: [{name: a, value: 1}, {name: b, value: 2}]}\n")
    assert [name for name, _ in magics.session.executor.list_dags()] == ["renamed"]


async def test_action_cell_may_use_ipython_syntax(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, "%%dagger_action\nanswer = %time 41 + 1\ndef f():\n    return answer\n")
    assert magics.session.registry.get("f").fn() == 42


# -- %dagger_respond -----------------------------------------------------------------------------


async def test_respond_magic_answers_a_question(shell: InteractiveShell, magics: DaggerMagics) -> None:
    session = magics.session
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

    @dagger_nb.action(registry=session.registry)
    async def approve(ctx: dagger_nb.NodeContext) -> object:
        return {"answer": await ctx.ask_human("Ship it?", schema=schema)}

    @dagger_nb.action(registry=session.registry)
    async def note(ctx: dagger_nb.NodeContext) -> object:
        return {"answer": await ctx.ask_human("Any note?")}

    session.executor.add_workflow(dagger_nb.WorkflowSpec.model_validate(
        {"name": "ask", "nodes": [{"id": "q", "action": "approve"}, {"id": "n", "action": "note"}]}
    ))
    handle = session.start("ask")
    asked: dict[str, str] = {}
    async for event in handle.subscribe():
        if isinstance(event, HumanInputRequested):
            asked[event.node] = event.request_id
            if len(asked) == 2:
                break
    shell.user_ns.update(rid=handle.run_id, q=asked["q"], n=asked["n"])
    with pytest.raises(UsageError, match="no run with id 'zzz' in this session"):
        run(shell, "%dagger_respond zzz $q true")
    with pytest.raises(UsageError, match=r"has no open question 'nope' \(open: "):
        run(shell, "%dagger_respond $rid nope true")
    with pytest.raises(UsageError, match="usage: %dagger_respond RUN_ID REQUEST_ID VALUE"):
        run(shell, "%dagger_respond $rid")
    message = r"answer refused: answer to 'Ship it\?': invalid payload at '\$.ok': 'maybe' is not of type 'boolean'"
    with pytest.raises(UsageError, match=message):
        run(shell, f'%dagger_respond {handle.run_id} {asked["q"]} {{"ok": "maybe"}}')
    assert asked["q"] in [question.request_id for question in handle.questions()]
    run(shell, f'%dagger_respond {handle.run_id} {asked["q"]} {{"ok": true}}')
    run(shell, "%dagger_respond $rid $n looks good, ship it")
    report = await handle.wait()
    assert report.cache.get("q", "answer") == {"ok": True}
    assert report.cache.get("n", "answer") == "looks good, ship it"


async def test_session_starts_supervisor_loops_and_remembers_them(session: Session) -> None:
    @dagger_nb.action(registry=session.registry)
    async def supervisor_step(iteration: int, ctx: dagger_nb.NodeContext) -> int:
        if iteration < 2:
            ctx.add_node("supervisor_step", dependencies=[ctx.node])
        return iteration

    handle = session.start_agent_dag("count to two")
    assert session.latest() is handle
    report = await handle.wait()
    assert report.success and list(report.outcomes) == ["supervisor_step_1", "supervisor_step_2", "supervisor_step_3"]
    assert session.cache.get("supervisor_step_3", "result") == 2


# -- --inputs forms, %dagger_resume without an id, %%dagger_job, %dagger_dashboard pubsub ----------

PACK = "%%dagger_action\ndef pack(**values):\n    return {'values': values}\n"
PACK_FLOW = "%%dagger_workflow packed --no-graph\nnodes:\n  - {id: p, action: pack, inputs: [INPUTS]}\n"


@pytest.mark.parametrize(
    "inputs",
    [
        "x=4",
        "--input x=4",  # the CLI's spelling is accepted too
        "--input x=4 --input unused=1",  # and repeated
        "{'x': 4}",  # the unquoted mapping, split at its spaces by IPython
        "\"{'x': 4}\"",
        "'{\"x\": 4}'",
        "params",
        "$params",
    ],
)
async def test_run_inputs_forms(shell: InteractiveShell, magics: DaggerMagics, inputs: str) -> None:
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph"))
    shell.user_ns["params"] = {"x": 4}
    option = "" if inputs.startswith("--input ") else "--inputs "
    run(shell, f"%dagger_run sums {option}{inputs} --wait")
    assert shell.user_ns["_dagger_run"].status == "succeeded"
    assert magics.session.cache.get("second", "result") == 15


async def test_key_value_inputs_read_values_as_the_cli_does(shell: InteractiveShell, magics: DaggerMagics) -> None:
    run(shell, PACK)
    names = ["n", "flag", "items", "word", "spaced", "quoted_json", "empty", "eq"]
    refs = ", ".join(f"{{name: {name}, reference: inputs.{name}}}" for name in names)
    run(shell, PACK_FLOW.replace("INPUTS", refs))
    line = ("%dagger_run packed --wait --inputs n=3 flag=true items='[1, \"a\"]' word=bees "
            "spaced=\"hello  world\" quoted_json='\"7\"' empty= eq=a=b")
    run(shell, line)
    values = magics.session.cache.get("p", "values")
    assert values == {"n": 3, "flag": True, "items": [1, "a"], "word": "bees", "spaced": "hello  world",
                      "quoted_json": "7", "empty": "", "eq": "a=b"}


@pytest.mark.parametrize(
    "inputs, message",
    [
        ("topic", "no variable named 'topic'"),
        ("topic=bees oops", "'oops' is not KEY=VALUE"),
        ("=bees", "'=bees' is not KEY=VALUE"),
        ("a=1 a=2", "'a' is given twice"),
        ("\"{'a': 1\"", "not a mapping literal"),
        ("\"{'a': len('x')}\"", "not a mapping literal"),
        ("'[1, 2]'", "is not KEY=VALUE"),
        ("x='unclosed", "No closing quotation"),
    ],
)
async def test_bad_inputs_show_both_forms(
    shell: InteractiveShell, magics: DaggerMagics, inputs: str, message: str
) -> None:
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph"))
    with pytest.raises(UsageError, match=message) as raised:
        run(shell, f"%dagger_run sums --inputs {inputs}")
    usage = str(raised.value)
    assert "--inputs topic=bees rounds=3" in usage and "--inputs \"{'topic': 'bees', 'rounds': 3}\"" in usage
    assert magics.session.runs == {}  # nothing started


async def test_inputs_are_never_evaluated(shell: InteractiveShell, magics: DaggerMagics, tmp_path: object) -> None:
    run(shell, ADD_ACTION)
    run(shell, sums("--no-graph"))
    shell.user_ns["marker"] = []
    hostile = "\"{'x': marker.append(1) or 1}\""
    with pytest.raises(UsageError, match="not a mapping literal"):
        run(shell, f"%dagger_run sums --inputs {hostile}")
    with pytest.raises(UsageError, match="not a mapping literal"):
        run(shell, "%%dagger_agent a --input-schema \"{'type': marker.append(1)}\"\ndef a(input, ctx):\n    pass\n")
    assert shell.user_ns["marker"] == []


FAILING_FLOW = (
    "%%dagger_workflow {name} --no-graph\nconfig: {{on_failure: Pause, max_attempts: 1}}\nnodes:\n"
    "  - {{id: one, action: add, inputs: [{{name: a, value: 1}}, {{name: b, value: 2}}]}}\n"
    "  - {{id: two, action: check, inputs: [{{name: x, reference: one.result}}]}}\n"
)


async def test_resume_without_an_id_takes_the_latest_paused_or_failed_run(
    shell: InteractiveShell, magics: DaggerMagics
) -> None:
    run(shell, "%%dagger_action\ndef check(x):\n    raise ValueError(f'bad {x}')\n")
    run(shell, ADD_ACTION)
    run(shell, FAILING_FLOW.format(name="w1"))
    run(shell, FAILING_FLOW.format(name="w2"))
    run(shell, "%dagger_run w1 --wait")
    older = shell.user_ns["_dagger_run"]
    run(shell, "%dagger_run w2 --wait")
    newer = shell.user_ns["_dagger_run"]
    run(shell, sums("--no-graph --run --inputs x=1 --wait"))  # the latest run, but it succeeded
    assert (older.status, newer.status) == ("paused", "paused")
    run(shell, "%%dagger_action\ndef check(x):\n    return x * 10\n")
    run(shell, "%dagger_resume --wait")
    assert shell.user_ns["_dagger_run"].run_id == newer.run_id and newer.status == "succeeded"
    run(shell, "%dagger_resume --wait")
    assert shell.user_ns["_dagger_run"].run_id == older.run_id and older.status == "succeeded"
    with pytest.raises(UsageError, match="no paused or failed run in this session to resume"):
        run(shell, "%dagger_resume")


ECHO_AGENT = "%%dagger_agent echo\nasync def echo(input, ctx):\n    return {'echo': input}\n"


async def test_job_magic_creates_the_objective_and_starts_it_with_a_dashboard(
    shell: InteractiveShell, magics: DaggerMagics, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[object] = []
    monkeypatch.setattr("dagger_nb.notebook.magics.display", shown.append)
    run(shell, ECHO_AGENT)
    run(shell, "%%dagger_job essay --agent echo --input topic=bees words=300 --out mine\n"
               "Write a short essay\non the topic.\n")
    handle = shell.user_ns["_dagger_job"]
    assert shell.user_ns["mine"] is handle
    assert isinstance(shown[0], JobDashboard) and magics.session.dashboards["essay"] is shown[0]
    await handle.wait()
    objective = magics.session.task_manager.get_objective("essay")
    assert objective is not None
    assert objective.description == "Write a short essay\non the topic."
    assert objective.input == {"topic": "bees", "words": 300}
    assert objective.output is not None
    assert objective.output.data["echo"] == {"topic": "bees", "words": 300}


@pytest.mark.parametrize(
    "cell, message",
    [
        ("%%dagger_job j --agent nobody\nDo it.\n", "nobody"),
        ("%%dagger_job j --agent echo\n\n", "the cell is the objective's description"),
        ("%%dagger_job j\nDo it.\n", "the following arguments are required: --agent"),
        ("%%dagger_job j --agent echo --input x\nDo it.\n", "no variable named 'x'"),
        ("%%dagger_job j --agent echo --out 1x\nDo it.\n", "--out needs a Python name"),
    ],
    ids=["unknown-agent", "empty-cell", "no-agent", "bad-input", "bad-out"],
)
async def test_job_magic_usage_errors(shell: InteractiveShell, magics: DaggerMagics, cell: str, message: str) -> None:
    run(shell, ECHO_AGENT)
    with pytest.raises(UsageError, match=message):
        run(shell, cell)
    assert magics.session.job_ids() == []  # nothing was created


async def test_job_magic_rerun_shows_the_existing_job_and_refuses_a_changed_objective(
    shell: InteractiveShell, magics: DaggerMagics, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown: list[object] = []
    monkeypatch.setattr("dagger_nb.notebook.magics.display", shown.append)
    run(shell, ECHO_AGENT)
    cell = "%%dagger_job j1 --agent echo --input topic=bees\nDo it.\n"
    run(shell, cell)
    first = shell.user_ns["_dagger_job"]
    await first.wait()
    capsys.readouterr()

    run(shell, cell)  # re-running the cell just works: the same job, shown again

    assert shell.user_ns["_dagger_job"] is first
    assert isinstance(shown[-1], JobDashboard) and len(shown) == 2
    assert "job 'j1' already exists with this objective (status: completed): showing it" in capsys.readouterr().out
    assert len(magics.session.task_manager.tasks("j1")) == 1
    with pytest.raises(UsageError, match="job 'j1' already exists .*another objective .*its description differs"
                                         ".*give it another name"):
        run(shell, "%%dagger_job j1 --agent echo --input topic=bees\nDo something else.\n")
    with pytest.raises(UsageError, match="its input differs"):
        run(shell, "%%dagger_job j1 --agent echo --input topic=ants\nDo it.\n")
    assert len(magics.session.task_manager.tasks("j1")) == 1


async def test_dashboard_pubsub_shows_the_bus_monitor(
    shell: InteractiveShell, magics: DaggerMagics, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagger_nb.notebook import PubSubMonitor

    shown: list[object] = []
    monkeypatch.setattr("dagger_nb.notebook.magics.display", shown.append)
    run(shell, "%%dagger_pubsub_agent shout --subscribe words --publish shouts\n"
               "async def shout(message, ctx):\n    await ctx.publish('shouts', message.payload.upper())\n")
    bus = magics.session.pubsub
    await bus.publish("words", "hi")
    await bus.run(until_idle=True)
    run(shell, "%dagger_dashboard pubsub")
    assert isinstance(shown[0], PubSubMonitor) and magics.session.dashboards["pubsub"] is shown[0]
