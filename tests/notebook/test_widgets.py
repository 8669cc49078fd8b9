"""The dashboards, through their widget state (no browser)."""

from __future__ import annotations

import html
import itertools
import re
import time
from dataclasses import replace
from typing import Any

import anyio
import ipywidgets as widgets
import pytest

import dagger_nb
from dagger_nb import ActionRegistry, DagExecutor, NodeContext, WorkflowSpec
from dagger_nb.dag import RunHandle
from dagger_nb.dag.events import HumanInputRequested
from dagger_nb.errors import GraphvizNotFound
from dagger_nb.export import short_id
from dagger_nb.graph import STATUS_COLOURS
from dagger_nb.notebook._throttle import Throttle
from dagger_nb.notebook.widgets import JobDashboard, PubSubMonitor, RunDashboard

pytestmark = pytest.mark.anyio

XSS = "<img src=x onerror=alert(1)>"


def chain(name: str, action: str, length: int, **config: Any) -> WorkflowSpec:
    """``length`` nodes in a row, each reading the one before."""
    nodes: list[dict[str, Any]] = [{"id": "n0", "action": action}]
    for i in range(1, length):
        nodes.append({"id": f"n{i}", "action": action, "inputs": [{"name": "x", "reference": f"n{i - 1}.result"}]})
    return WorkflowSpec.model_validate({"name": name, "nodes": nodes, "config": config})


def bar(dashboard: Any) -> dict[str, int]:
    """The progress bar's segments (status -> count) and its ``done``/``total`` numbers."""
    value = dashboard.progress.value
    counts = {status: int(count) for count, status in re.findall(r"title='(\d+) (\w+)'", value)}
    done, total = re.search(r"(\d+)/(\d+) ", value).groups()  # type: ignore[union-attr]
    return {**counts, "done": int(done), "total": int(total)}


def node_label(svg: str, node: str) -> str:
    """The text Graphviz drew in ``node``'s box."""
    start = svg.index(f"<title>{node}</title>")
    return " ".join(re.findall(r">([^<]+)</text>", svg[start: svg.index("</g>", start)]))


async def until(check: Any, seconds: float, message: str) -> float:
    """Poll ``check()`` until true (or fail after ``seconds``); returns how long it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, message
        await anyio.sleep(0.01)
    return time.monotonic() - start


def all_text(dashboard: Any) -> str:
    panels = [dashboard.header, dashboard.table, dashboard.errors, dashboard.graph.widget]
    if dashboard.agent_panel is not None:
        panels.append(dashboard.agent_panel)
    return "\n".join(panel.value for panel in panels)


@pytest.fixture
async def executor() -> Any:
    async with DagExecutor(ActionRegistry()) as executor:
        yield executor


# -- the throttle --------------------------------------------------------------------------------


def test_throttle_draws_at_most_once_per_interval() -> None:
    now = [0.0]
    draws: list[float] = []
    throttle = Throttle(lambda: draws.append(now[0]), interval=0.25, clock=lambda: now[0])
    for _ in range(10_000):  # 10,000 events over 10 s of (fake) time, no loop: draws when allowed
        throttle.poke()
        now[0] += 0.001
    throttle.flush()
    assert throttle.redraws == len(draws) <= 10 / 0.25 + 2
    assert all(b - a >= 0.25 - 1e-9 for a, b in itertools.pairwise(draws[:-1]))


async def test_throttle_on_the_loop_coalesces_bursts() -> None:
    drawn = [anyio.Event()]
    throttle = Throttle(lambda: drawn[-1].set(), interval=0.05)
    for burst in (1, 2):
        for _ in range(10_000):  # a burst of events while the loop is busy: one timer, no draw yet
            throttle.poke()
        assert throttle.redraws == burst - 1 and throttle.pending
        with anyio.fail_after(5):
            await drawn[-1].wait()
        drawn.append(anyio.Event())
        assert throttle.redraws == burst and not throttle.pending


# -- RunDashboard --------------------------------------------------------------------------------


async def test_header_and_table_follow_the_run(executor: DagExecutor) -> None:
    gate = anyio.Event()
    started = anyio.Event()

    async def step(x: int = 0) -> int:
        started.set()
        await gate.wait()
        return x + 1

    executor.registry.register("step", step)
    executor.add_workflow(chain("c", "step", 3))
    handle = executor.start("c")
    dashboard = RunDashboard(handle, interval=0)
    assert "pending" in dashboard.table.value
    await started.wait()
    dashboard.refresh()
    assert "running" in dashboard.header.value and bar(dashboard) == {"running": 1, "done": 0, "total": 3}
    gate.set()
    report = await handle.wait()
    assert report.status == "succeeded"
    assert dashboard.finished and dashboard.cancel_button.disabled
    assert bar(dashboard) == {"succeeded": 3, "done": 3, "total": 3} and "ETA" not in dashboard.progress.value
    assert dashboard.table.value.count("succeeded") == 3
    dashboard.graph.join(timeout=30)
    assert "<svg" in dashboard.graph.widget.value
    dashboard.close()


async def test_ten_thousand_events_are_throttled(executor: DagExecutor) -> None:
    async def step(x: int = 0) -> int:
        return x + 1

    executor.registry.register("step", step)
    nodes = [{"id": f"n{i}", "action": "step"} for i in range(5_000)]
    executor.add_workflow(WorkflowSpec.model_validate({"name": "wide", "nodes": nodes}))
    start = time.monotonic()
    handle = executor.start("wide")
    dashboard = RunDashboard(handle, graph_live_limit=0)
    await handle.wait()
    elapsed = time.monotonic() - start
    assert dashboard.events_seen == 10_000  # a start and a success per node
    assert dashboard.redraws <= 4 * elapsed + 2
    assert dashboard.table.value.count("succeeded") == dashboard.table_rows
    assert "5000" in dashboard.header.value
    dashboard.close()


async def test_final_state_is_resent_from_the_waiting_task(executor: DagExecutor,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async def step(x: int = 0) -> int:
        return x + 1

    executor.registry.register("step", step)
    executor.add_workflow(chain("c", "step", 2))
    handle = executor.start("c")
    dashboard = RunDashboard(handle)
    sent: list[str] = []
    monkeypatch.setattr(dashboard.table, "send_state", lambda *a, **k: sent.append(dashboard.table.value))
    await handle.wait()
    assert sent[-1].count("succeeded") == 2
    resent = len(sent)
    await dashboard.wait()
    assert len(sent) == resent + 1
    dashboard.close()


async def test_every_text_is_escaped(executor: DagExecutor) -> None:
    def broken(x: int = 0) -> int:
        raise ValueError(XSS)

    executor.registry.register(XSS, broken)
    executor.add_workflow(WorkflowSpec.model_validate(
        {"name": XSS, "nodes": [{"id": "n", "action": XSS, "description": XSS}], "config": {"max_attempts": 1}}
    ))
    handle = executor.start(XSS)
    dashboard = RunDashboard(handle)
    report = await handle.wait()
    assert report.status != "succeeded"
    text = all_text(dashboard)
    assert "<img" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in dashboard.errors.value
    assert "&lt;img" in dashboard.header.value and "&lt;img" in dashboard.table.value
    dashboard.close()


async def test_graph_without_graphviz_shows_a_note_and_the_dot(
    executor: DagExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(dot: str) -> str:
        raise GraphvizNotFound()

    monkeypatch.setattr("dagger_nb.notebook._dashboard.render_svg", missing)
    executor.registry.register("step", lambda: 1)
    executor.add_workflow(WorkflowSpec.model_validate({"name": "g", "nodes": [{"id": "a<b", "action": "step"}]}))
    handle = executor.start("g")
    dashboard = RunDashboard(handle)
    await handle.wait()
    value = dashboard.graph.widget.value
    assert "dagger-graph-note" in value and "Graphviz" in value
    assert "digraph" in value and "a&lt;b" in value and "<svg" not in value
    dashboard.close()


async def test_large_graphs_are_redrawn_less_often_and_never_stale_at_the_end(executor: DagExecutor) -> None:
    gates = [anyio.Event(), anyio.Event(), anyio.Event()]
    started = [anyio.Event(), anyio.Event(), anyio.Event()]

    async def step(x: int = -1) -> int:
        started[x + 1].set()
        await gates[x + 1].wait()
        return x + 1

    executor.registry.register("step", step)
    executor.add_workflow(chain("big", "step", 3))
    handle = executor.start("big")
    dashboard = RunDashboard(handle, graph_live_limit=2)  # 3 nodes: redrawn at most every 5 s
    await started[0].wait()
    await until(lambda: dashboard.graph.renders == 1, 5, "the first picture never came")
    gates[0].set()
    await started[1].wait()
    dashboard.refresh()
    assert dashboard.graph.busy and dashboard.graph.renders == 1  # the next picture waits for its turn
    gates[1].set()
    gates[2].set()
    await handle.wait()
    dashboard.graph.join(timeout=30)
    svg = dashboard.graph.widget.value
    assert all("succeeded" in node_label(svg, f"n{i}") for i in range(3))
    assert dashboard.graph.renders == 2 and not dashboard.graph.busy
    dashboard.close()


async def test_cancel_button_cancels_the_run(executor: DagExecutor) -> None:
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    executor.registry.register("forever", forever)
    executor.add_workflow(WorkflowSpec.model_validate({"name": "f", "nodes": [{"id": "a", "action": "forever"}]}))
    handle = executor.start("f")
    dashboard = RunDashboard(handle)
    await started.wait()
    dashboard.cancel_button.click()
    report = await handle.wait()
    assert report.status == "cancelled" and "cancelled" in dashboard.header.value
    dashboard.close()


async def test_dashboard_of_a_finished_run_shows_it_at_once(executor: DagExecutor) -> None:
    executor.registry.register("step", lambda: 1)
    executor.add_workflow(WorkflowSpec.model_validate({"name": "d", "nodes": [{"id": "a", "action": "step"}]}))
    handle: RunHandle = executor.start("d")
    await handle.wait()
    dashboard = RunDashboard(handle)
    assert dashboard.finished and "succeeded" in dashboard.header.value and dashboard.redraws == 1
    dashboard.close()


# -- JobDashboard --------------------------------------------------------------------------------


async def test_job_dashboard_follows_a_job() -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager

    registry = TaskAgentRegistry()
    gate = anyio.Event()

    async def plan(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        for i in range(3):
            ctx.add_task(f"step {i}", "work", {"i": i})
        return {"planned": 3}

    async def work(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        await gate.wait()
        if input["i"] == 2:
            raise ValueError(XSS)
        return {"i": input["i"]}

    registry.register("plan", plan)
    registry.register("work", work)
    async with TaskManager(registry=registry) as manager:
        manager.add_objective("j", "plan three steps", "plan")
        handle = manager.start_job("j")
        dashboard = JobDashboard(manager, "j", handle=handle, interval=0)
        seen = anyio.Event()

        def on_event(event: object) -> None:
            if type(event).__name__ == "TaskStarted" and getattr(event, "agent", "") == "work":
                seen.set()

        handle.events.add_listener(on_event)
        await seen.wait()
        dashboard.refresh()
        assert "in_progress" in dashboard.table.value
        gate.set()
        await dashboard.wait()
        text = all_text(dashboard)
        assert "<img" not in text and "&lt;img" in dashboard.errors.value
        assert "work" in dashboard.agent_panel.value  # type: ignore[union-attr]
        dashboard.graph.join(timeout=30)
        assert "<svg" in dashboard.graph.widget.value
        assert dashboard.finished
        dashboard.close()


# -- PubSubMonitor -------------------------------------------------------------------------------


async def test_pubsub_monitor_shows_messages_agents_and_failures() -> None:
    from dagger_nb.pubsub import PubSub, PubSubAgentRegistry, pubsub_agent

    registry = PubSubAgentRegistry()

    @pubsub_agent("shout", subscribe=["words"], publish=["shouts"], registry=registry)
    async def shout(message: Any, ctx: Any) -> None:
        if message.payload == "boom":
            raise ValueError(XSS)
        await ctx.publish("shouts", message.payload.upper())

    bus = PubSub(registry=registry)
    bus.register("shout")
    monitor = PubSubMonitor(bus)
    for word in ("hello", XSS, "boom"):
        await bus.publish("words", word)
    await bus.run(until_idle=True)
    monitor.refresh()
    assert "HELLO" in monitor.table.value and "&lt;IMG" in monitor.table.value
    assert "shout" in monitor.agent_panel.value  # type: ignore[union-attr]
    assert "&lt;img" in monitor.errors.value
    assert "<img" not in all_text(monitor) and "<IMG" not in all_text(monitor)
    monitor.graph.join(timeout=30)
    assert "<svg" in monitor.graph.widget.value
    bus.close()
    monitor.close()




async def test_a_drawing_bug_never_breaks_the_run(executor: DagExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    executor.registry.register("step", lambda: 1)
    executor.add_workflow(WorkflowSpec.model_validate({"name": "b", "nodes": [{"id": "a", "action": "step"}]}))
    handle = executor.start("b")
    dashboard = RunDashboard(handle)

    def broken(*, final: bool) -> None:
        raise RuntimeError("oops")

    monkeypatch.setattr(dashboard, "draw", broken)
    report = await handle.wait()
    assert report.status == "succeeded"
    assert isinstance(dashboard.draw_error, RuntimeError)
    assert "could not draw: RuntimeError: oops" in dashboard.errors.value
    dashboard.close()


# -- RunDashboard: a growing run, questions, workers ----------------------------------------------


async def test_nodes_added_while_the_run_goes_on_join_the_table_and_graph(executor: DagExecutor) -> None:
    gate = anyio.Event()
    tool_started = anyio.Event()

    @dagger_nb.action(registry=executor.registry)
    async def supervisor_step(iteration: int, ctx: NodeContext) -> str:
        if iteration == 0:
            ctx.add_node("tool", id="search_web", dependencies=[ctx.node])
        return f"step {iteration}"

    @dagger_nb.action(registry=executor.registry)
    async def tool(ctx: NodeContext) -> str:
        tool_started.set()
        await gate.wait()
        return "found"

    handle = executor.start_agent_dag("grow")
    dashboard = RunDashboard(handle, interval=0)
    assert "search_web" not in dashboard.table.value and bar(dashboard)["total"] == 1
    await tool_started.wait()
    dashboard.refresh()
    assert "search_web" in dashboard.table.value and "running" in dashboard.table.value
    assert bar(dashboard)["total"] == 2 and bar(dashboard)["done"] == 1
    gate.set()
    report = await handle.wait()
    dashboard.graph.join(timeout=30)
    assert report.success and dashboard.table.value.count("succeeded") == 2
    assert "search_web" in dashboard.graph.widget.value and bar(dashboard)["done"] == 2
    dashboard.close()


def asking(executor: DagExecutor, **ask: Any) -> RunHandle:
    """Start a one-node run whose node asks ``Ship it?`` with ``ask``'s options and returns the answer."""

    @dagger_nb.action(registry=executor.registry)
    async def approve(ctx: NodeContext) -> object:
        return {"answer": await ctx.ask_human(f"Ship it? {XSS}", **ask)}

    executor.add_workflow(WorkflowSpec.model_validate({"name": "ask", "nodes": [{"id": "q", "action": "approve"}]}))
    return executor.start("ask")


async def asked(handle: RunHandle) -> HumanInputRequested:
    async for event in handle.subscribe():
        if isinstance(event, HumanInputRequested):
            return event
    raise AssertionError("the run ended without asking")


@pytest.mark.parametrize(
    ("schema", "kind", "value", "expected"),
    [
        ({"type": "string"}, widgets.Text, "ship", "ship"),
        ({"type": "number"}, widgets.FloatText, 2.5, 2.5),
        ({"type": "integer"}, widgets.IntText, 3, 3),
        ({"type": "boolean"}, widgets.Checkbox, True, True),
        ({"enum": ["yes", "no", 3]}, widgets.Dropdown, 3, 3),
    ],
)
async def test_a_question_gets_a_form_made_from_its_schema(
    executor: DagExecutor, schema: dict[str, Any], kind: type, value: object, expected: object
) -> None:
    handle = asking(executor, schema=schema)
    dashboard = RunDashboard(handle, interval=0)
    event = await asked(handle)
    dashboard.refresh()
    form = dashboard.questions.forms[event.request_id]
    assert list(form.fields) == [""] and isinstance(form.fields[""], kind)
    assert "Ship it? &lt;img" in form.prompt.value and "<img" not in form.prompt.value
    form.fields[""].value = value
    form.submit.click()
    report = await handle.wait()
    assert report.cache.get("q", "answer") == expected
    assert dashboard.questions.forms == {} and dashboard.questions.children == ()
    dashboard.close()


async def test_an_object_schema_gets_one_field_per_property_and_refusals_are_shown(executor: DagExecutor) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "reason": {"type": "string", "minLength": 3}},
        "required": ["ok", "reason"],
    }
    handle = asking(executor, schema=schema, default={"reason": XSS})
    dashboard = RunDashboard(handle, interval=0)
    event = await asked(handle)
    dashboard.refresh()
    form = dashboard.questions.forms[event.request_id]
    assert isinstance(form.fields["ok"], widgets.Checkbox) and isinstance(form.fields["reason"], widgets.Text)
    assert form.fields["reason"].value == XSS
    form.fields["reason"].value = "<b"
    form.submit.click()
    assert "is too short" in form.message.value and "&lt;b" in form.message.value and "<b" not in form.message.value
    dashboard.refresh()
    assert dashboard.questions.forms[event.request_id] is form and [q.request_id for q in handle.questions()] == [
        event.request_id
    ]
    form.fields["ok"].value = True
    form.fields["reason"].value = "tests pass"
    form.submit.click()
    report = await handle.wait()
    assert report.cache.get("q", "answer") == {"ok": True, "reason": "tests pass"}
    dashboard.close()


async def test_other_schemas_get_a_json_textarea(executor: DagExecutor) -> None:
    handle = asking(executor, schema={"type": "array", "items": {"type": "integer"}})
    dashboard = RunDashboard(handle, interval=0)
    event = await asked(handle)
    dashboard.refresh()
    form = dashboard.questions.forms[event.request_id]
    assert form.fields == {} and form.textarea is not None
    form.textarea.value = "[1, 2"
    form.submit.click()
    assert "not valid JSON" in form.message.value
    form.textarea.value = '["a"]'
    form.submit.click()
    assert "is not of type" in form.message.value
    form.textarea.value = "[1, 2]"
    form.submit.click()
    report = await handle.wait()
    assert report.cache.get("q", "answer") == [1, 2]
    dashboard.close()


async def test_a_worker_column_appears_only_when_a_node_ran_on_a_worker(executor: DagExecutor) -> None:
    executor.registry.register("step", lambda: 1)
    executor.add_workflow(WorkflowSpec.model_validate(
        {"name": "w", "nodes": [{"id": "a", "action": "step"}, {"id": "b", "action": "step"}]}
    ))
    handle = executor.start("w")
    dashboard = RunDashboard(handle)
    report = await handle.wait()
    assert "worker" not in dashboard.table.value
    report.outcomes["a"] = replace(report.outcomes["a"], worker="tcp://10.0.0.7:40123")
    dashboard.refresh()
    assert "<th style='text-align:left;padding:0 8px'>worker</th>" in dashboard.table.value
    assert "tcp://10.0.0.7:40123" in dashboard.table.value
    dashboard.close()


# -- current, always ----------------------------------------------------------------------------


async def test_the_graph_shows_a_running_node_within_a_second_without_a_further_event(
    executor: DagExecutor,
) -> None:
    gate = anyio.Event()
    b_started: list[float] = []

    async def quick(x: int = 0) -> int:
        return x + 1

    async def slow(x: int = 0) -> int:
        b_started.append(time.monotonic())
        await gate.wait()
        return x + 1

    executor.registry.register("quick", quick)
    executor.registry.register("slow", slow)
    executor.add_workflow(WorkflowSpec.model_validate({"name": "abc", "nodes": [
        {"id": "a", "action": "quick"},
        {"id": "b", "action": "slow", "inputs": [{"name": "x", "reference": "a.result"}]},
        {"id": "c", "action": "quick", "inputs": [{"name": "x", "reference": "b.result"}]},
    ]}))
    handle = executor.start("abc")
    dashboard = RunDashboard(handle)
    await until(lambda: b_started, 10, "b never started")
    # b's start is the last event for a while: the graph must still catch up with it
    took = await until(lambda: "<title>b</title>" in dashboard.graph.widget.value
                       and "running" in node_label(dashboard.graph.widget.value, "b"), 5, "the graph stayed stale")
    assert time.monotonic() - b_started[0] <= 1.0, f"the graph showed b running {took:.2f}s after it started"
    assert "succeeded" in node_label(dashboard.graph.widget.value, "a")
    assert "b" in dashboard.table.value and "running" in dashboard.table.value
    gate.set()
    await handle.wait()
    dashboard.graph.join(timeout=30)
    assert "succeeded" in node_label(dashboard.graph.widget.value, "c")
    dashboard.close()


async def test_the_clock_ticks_while_a_node_runs_and_nothing_else_happens(executor: DagExecutor) -> None:
    gate = anyio.Event()
    started = anyio.Event()

    async def wait_for_gate() -> int:
        started.set()
        await gate.wait()
        return 1

    executor.registry.register("long", wait_for_gate)
    executor.add_workflow(WorkflowSpec.model_validate({"name": "l", "nodes": [{"id": "a", "action": "long"}]}))
    handle = executor.start("l")
    dashboard = RunDashboard(handle)
    await started.wait()
    changes: list[float] = []
    dashboard.header.observe(lambda _change: changes.append(time.monotonic()), names="value")
    events = dashboard.events_seen
    since = time.monotonic()

    def clock() -> float:
        match = re.search(r" · (\d+\.\d)s", dashboard.header.value)
        return float(match.group(1)) if match else 0.0

    await until(lambda: clock() >= 2.0, 5, "the clock did not reach 2.0s")
    assert dashboard.events_seen == events  # no event came: the ticks alone moved the clock
    gaps = [b - a for a, b in itertools.pairwise([since, *changes])]
    assert len(changes) >= 2 and max(gaps) <= 1.0, gaps
    gate.set()
    await handle.wait()
    final = dashboard.header.value
    assert dashboard.finished and "succeeded" in final
    ticks = dashboard.ticks
    await anyio.sleep(2 * dashboard.tick)  # time passing, to show that nothing redraws any more
    assert dashboard.ticks == ticks and dashboard.header.value == final
    dashboard.close()


async def test_a_resumed_run_is_followed_by_its_first_dashboard(executor: DagExecutor) -> None:
    broken = [True]

    async def flaky() -> int:
        if broken[0]:
            raise KeyError("body")
        return 1

    executor.registry.register("flaky", flaky)
    executor.add_workflow(WorkflowSpec.model_validate({
        "name": "p", "nodes": [{"id": "a", "action": "flaky"}], "config": {"on_failure": "pause", "max_attempts": 1}}))
    handle = executor.start("p")
    dashboard = RunDashboard(handle)
    report = await handle.wait()
    assert report.status == "paused" and "paused" in dashboard.header.value and dashboard.finished
    broken[0] = False
    resumed = executor.start_resume(handle.run_id)
    report = await resumed.wait()
    assert report.status == "succeeded"
    assert dashboard.finished and "succeeded" in dashboard.header.value and "paused" not in dashboard.header.value
    assert bar(dashboard) == {"succeeded": 1, "done": 1, "total": 1}
    dashboard.close()


async def test_a_job_dashboard_reaches_its_final_state_without_anyone_awaiting_it() -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager

    registry = TaskAgentRegistry()

    async def work(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"body": {"text": "line one\nline two", "n": 1}}

    registry.register("work", work)
    async with TaskManager(registry=registry) as manager:
        manager.add_objective("j", "one step", "work")
        handle = manager.start_job("j")
        dashboard = JobDashboard(manager, "j", handle=handle)
        finished = anyio.Event()
        handle.events.add_listener(lambda e: type(e).__name__ == "JobFinished" and finished.set())
        await finished.wait()
        assert dashboard.finished and "completed" in dashboard.header.value
        assert "running" not in dashboard.header.value
        assert bar(dashboard)["done"] == 1
        panel = dashboard.agent_panel.value  # type: ignore[union-attr]
        assert "\\n" not in panel and '{"body": {"text": "line one line two", "n": 1}}' in html.unescape(panel)
        await handle.wait()
        dashboard.close()


async def test_a_pubsub_monitor_reads_running_right_after_start_and_stopped_after_stop() -> None:
    from dagger_nb.pubsub import PubSub, PubSubAgentRegistry, pubsub_agent

    registry = PubSubAgentRegistry()
    handled = anyio.Event()

    @pubsub_agent("echo", subscribe=["in"], registry=registry)
    async def echo(message: Any, ctx: Any) -> None:
        handled.set()

    bus = PubSub(registry=registry)
    bus.register("echo")
    handle = bus.start()
    monitor = PubSubMonitor(bus, handle=handle)
    assert "running" in monitor.header.value and not monitor.finished
    await bus.publish("in", {"a": 1})
    await handled.wait()
    bus.stop()
    await handle.wait()
    assert monitor.finished and "stopped" in monitor.header.value
    monitor.graph.join(timeout=30)
    assert "<svg" in monitor.graph.widget.value
    bus.close()
    monitor.close()


# -- progress and labels ------------------------------------------------------------------------


def test_short_ids_keep_a_word_prefix() -> None:
    assert short_id("task-5af02c1e9b7d4e0f") == "task-5af02c1e…"
    assert short_id("3f2a9c1b-7d4e-4a2b-9c1d-0e5f6a7b8c9d") == "3f2a9c1b…"
    assert short_id("short") == "short"


def test_progress_rate_and_eta() -> None:
    from dagger_nb.export import progress_of, segmented_bar_html

    progress = progress_of({"completed": 3, "failed": 1, "in_progress": 2, "pending": 4}, 10,
                           elapsed=8.0, running=True)
    assert progress.counts == {"succeeded": 3, "failed": 1, "running": 2} and progress.done == 4
    assert progress.rate == 0.5 and progress.eta == 12.0
    html_bar = segmented_bar_html(progress, unit="tasks")
    assert "4/10 tasks · 8.0s · 0.5 tasks/s · ETA 12.0s" in html_bar
    assert "width:30.000%;background:#9be29b" in html_bar and "width:10.000%;background:#f28b82" in html_bar
    finished = progress_of({"succeeded": 10}, 10, elapsed=5.0, running=False)
    assert finished.eta is None and "ETA" not in segmented_bar_html(finished)


async def test_one_failed_node_of_four_is_one_red_segment_not_a_red_bar(executor: DagExecutor) -> None:
    def ok() -> int:
        return 1

    def broken() -> int:
        raise KeyError("body")

    executor.registry.register("ok", ok)
    executor.registry.register("broken", broken)
    nodes = [{"id": f"ok{i}", "action": "ok"} for i in range(3)] + [{"id": "bad", "action": "broken"}]
    executor.add_workflow(WorkflowSpec.model_validate(
        {"name": "four", "nodes": nodes, "config": {"on_failure": "pause", "max_attempts": 1}}))
    handle = executor.start("four")
    dashboard = RunDashboard(handle)
    report = await handle.wait()
    assert report.status == "paused"
    assert bar(dashboard) == {"succeeded": 3, "failed": 1, "done": 4, "total": 4}
    assert "width:75.000%" in dashboard.progress.value and "width:25.000%" in dashboard.progress.value
    # the error is told once, in the error panel, not again in the header
    assert "KeyError" not in dashboard.header.value and "KeyError" in dashboard.errors.value
    dashboard.close()


async def test_task_rows_show_the_description_and_a_short_id() -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager

    registry = TaskAgentRegistry()
    registry.register("work", lambda input, ctx: {"ok": True})
    async with TaskManager(registry=registry) as manager:
        manager.add_objective("j", "summarise the quarterly report", "work")
        handle = manager.start_job("j")
        dashboard = JobDashboard(manager, "j", handle=handle)
        await handle.wait()
        (task,) = manager.tasks("j")
        assert "summarise the quarterly report" in dashboard.table.value
        assert task.task_id not in dashboard.table.value and short_id(task.task_id) in dashboard.table.value
        assert f"<td style='padding:0 8px;white-space:nowrap'>{short_id(task.task_id)}</td>" in dashboard.table.value
        assert f"background:{STATUS_COLOURS['completed']}'>completed<" in dashboard.table.value
        dashboard.close()


# -- tracebacks and logs --------------------------------------------------------------------------


async def test_a_failed_cell_defined_action_shows_its_folded_traceback_and_its_logs(
    executor: DagExecutor, shell: Any
) -> None:
    shell.run_cell(
        "def parse_request():\n"
        "    print('parsing <request>')\n"
        "    payload = {}\n"
        "    return payload['body']\n",
        store_history=True,
    )
    executor.registry.register("parse", shell.user_ns["parse_request"])
    executor.add_workflow(WorkflowSpec.model_validate(
        {"name": "tb", "nodes": [{"id": "p", "action": "parse"}], "config": {"max_attempts": 1}}))
    handle = executor.start("tb")
    dashboard = RunDashboard(handle)
    report = await handle.wait()
    trace = report.outcomes["p"].traceback
    assert trace is not None and "Cell In[" in trace and "return payload['body']" in trace
    errors = dashboard.errors.value
    assert "<details class='dagger-traceback'><summary><b>p</b>" in errors
    assert html.escape(trace) in errors and "dagger_nb" not in errors
    assert errors.count("Last error: KeyError") == 1 and "KeyError" not in dashboard.header.value
    assert report.outcomes["p"].logs == ["parsing <request>"]
    assert "parsing &lt;request&gt;" in dashboard.logs.value and "<request>" not in dashboard.logs.value
    dashboard.close()


# -- big runs and the timeline ---------------------------------------------------------------------


async def test_a_big_fan_out_collapses_into_one_box_per_action_and_names_its_failed_nodes(
    executor: DagExecutor,
) -> None:
    def source() -> int:
        return 1

    def fan(x: int, i: int) -> int:
        if i in (7, 41):
            raise ValueError(f"item {i} is broken")
        return x + i

    executor.registry.register("source", source)
    executor.registry.register("fan", fan)
    nodes: list[dict[str, Any]] = [{"id": "src", "action": "source"}]
    nodes += [{"id": f"fan_{i}", "action": "fan",
               "inputs": [{"name": "x", "reference": "src.result"}, {"name": "i", "value": i}]} for i in range(100)]
    executor.add_workflow(WorkflowSpec.model_validate(
        {"name": "fanout", "nodes": nodes, "config": {"on_failure": "continue", "max_attempts": 1}}))
    handle = executor.start("fanout")
    dashboard = RunDashboard(handle)
    await handle.wait()
    dashboard.graph.join(timeout=60)
    svg = dashboard.graph.widget.value
    assert re.findall(r"<title>(action:\w+)</title>", svg) == ["action:source", "action:fan"]  # not 101 boxes
    fan_box = node_label(svg, "action:fan")
    assert "fan (100 nodes)" in fan_box and "98 succeeded · 2 failed" in fan_box
    assert "failed: fan_7, fan_41" in fan_box
    progress = dashboard.legend.value
    assert progress.count("<tr>") == 2 and "title='98 succeeded'" in progress and "title='2 failed'" in progress
    assert "dagger-legend" in progress and "failed" in progress
    assert "<b>fan_7</b>" in dashboard.errors.value and "<b>fan_41</b>" in dashboard.errors.value
    dashboard.close()


async def test_the_timeline_shows_running_and_finished_nodes_live(executor: DagExecutor) -> None:
    gate = anyio.Event()
    started = anyio.Event()

    async def quick() -> int:
        return 1

    async def slow() -> int:
        started.set()
        await gate.wait()
        return 1

    executor.registry.register("quick", quick)
    executor.registry.register("slow", slow)
    executor.add_workflow(WorkflowSpec.model_validate({"name": "tl", "nodes": [
        {"id": "q", "action": "quick"}, {"id": "s", "action": "slow"}]}))
    handle = executor.start("tl")
    dashboard = RunDashboard(handle, interval=0)
    await started.wait()
    await until(lambda: "q (quick): succeeded" in (dashboard.timeline.value or ""), 5, "no finished bar")  # type: ignore[union-attr]
    assert "s (slow): running" in dashboard.timeline.value  # type: ignore[union-attr]
    gate.set()
    await handle.wait()
    dashboard.settle()
    assert "s (slow): succeeded" in dashboard.timeline.value  # type: ignore[union-attr]
    dashboard.close()


async def test_a_node_waiting_for_its_next_attempt_says_so(executor: DagExecutor) -> None:
    from dagger_nb.dag.events import NodeRetrying

    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 2:
            raise KeyError("body")
        return 1

    executor.registry.register("flaky", flaky)
    executor.add_workflow(WorkflowSpec.model_validate({
        "name": "r", "nodes": [{"id": "a", "action": "flaky"}],
        "config": {"max_attempts": 3, "retry_strategy": {"Linear": {"delay_secs": 1.5}}}}))
    handle = executor.start("r")
    dashboard = RunDashboard(handle, interval=0)
    retrying = anyio.Event()
    handle.add_listener(lambda event: isinstance(event, NodeRetrying) and retrying.set())
    await retrying.wait()
    dashboard.refresh()
    table = html.unescape(dashboard.table.value)
    assert re.search(r"retrying in 1\.[0-5]s \(attempt 2 of 3\): KeyError: 'body'", table), table
    report = await handle.wait()
    assert report.success and "retrying" not in dashboard.table.value
    dashboard.close()


async def test_choosing_a_node_shows_its_inputs_outputs_logs_and_traceback(executor: DagExecutor) -> None:
    import pandas as pd

    def load() -> pd.DataFrame:
        print("loading <rows>")
        return pd.DataFrame({"city": [XSS, "Oslo", "Lima", "Pune", "Kobe", "Nice", "Bonn"], "n": range(7)})

    def summarise(frame: pd.DataFrame, label: str) -> int:
        raise KeyError(label)

    executor.registry.register("load", load)
    executor.registry.register("summarise", summarise)
    executor.add_workflow(WorkflowSpec.model_validate({"name": "insp", "config": {"max_attempts": 1}, "nodes": [
        {"id": "load", "action": "load"},
        {"id": "sum", "action": "summarise", "inputs": [{"name": "frame", "reference": "load.result"},
                                                         {"name": "label", "value": XSS}]}]}))
    handle = executor.start("insp")
    dashboard = RunDashboard(handle)
    await handle.wait()
    dashboard.inspector.select("load")
    shown = dashboard.inspector.panel.value
    assert "<b>Outputs</b>" in shown and "<table" in shown and "shape (7, 2)" in shown
    assert "Oslo" in shown and "Kobe" in shown and "Nice" not in shown  # the head: 5 rows
    assert "loading &lt;rows&gt;" in shown and "<img" not in shown and "<rows>" not in shown
    dashboard.inspector.select("sum")
    shown = dashboard.inspector.panel.value
    assert "<code>frame</code></td><td>load.result</td>" in shown and "Oslo" in shown  # the input's value
    assert "<code>label</code></td><td>literal</td>" in shown and "&lt;img" in shown and "<img" not in shown
    assert "<b>Traceback</b>" in shown and "in summarise" in shown and "<b>Outputs</b>" not in shown
    dashboard.close()


async def test_a_node_waiting_for_a_person_says_so(executor: DagExecutor) -> None:
    handle = asking(executor, schema={"type": "boolean"})
    dashboard = RunDashboard(handle, interval=0)
    event = await asked(handle)
    dashboard.refresh()
    assert ">asking<" in dashboard.table.value
    assert "waiting for a person to answer: Ship it? &lt;img" in dashboard.table.value
    handle.respond(event.request_id, True)
    await handle.wait()
    assert "asking" not in dashboard.table.value and "succeeded" in dashboard.table.value
    dashboard.close()


async def test_a_node_waiting_for_an_abandoned_attempt_says_so(executor: DagExecutor) -> None:
    import threading

    from dagger_nb.dag import events

    if not hasattr(events, "NodeWaiting"):
        pytest.skip("this runtime does not wait for abandoned attempts")
    release = threading.Event()
    calls: list[int] = []

    def stuck() -> int:
        calls.append(1)
        if len(calls) == 1:
            release.wait(30)  # outlives its timeout: the attempt is abandoned, its thread goes on
        return 1

    executor.registry.register("stuck", stuck)
    executor.add_workflow(WorkflowSpec.model_validate({
        "name": "ab", "nodes": [{"id": "a", "action": "stuck", "timeout": 0.2}],
        "config": {"max_attempts": 2, "retry_strategy": "Immediate"}}))
    handle = executor.start("ab")
    dashboard = RunDashboard(handle, interval=0)
    waiting = anyio.Event()
    handle.add_listener(lambda event: type(event).__name__ == "NodeWaiting" and waiting.set())
    await waiting.wait()
    dashboard.refresh()
    assert ">waiting<" in dashboard.table.value and "abandoned" in dashboard.table.value
    release.set()
    report = await handle.wait()
    assert report.success and ">waiting<" not in dashboard.table.value
    dashboard.close()
