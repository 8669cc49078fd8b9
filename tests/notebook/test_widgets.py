"""The dashboards, through their widget state (no browser)."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Any

import anyio
import ipywidgets as widgets
import pytest

import dagger_nb
from dagger_nb import ActionRegistry, DagExecutor, NodeContext, WorkflowSpec
from dagger_nb.dag import RunHandle
from dagger_nb.errors import GraphvizNotFound
from dagger_nb.notebook import JobDashboard, PubSubMonitor, RunDashboard
from dagger_nb.notebook.dashboards._throttle import Throttle
from tests.notebook.dashboard_helpers import XSS, all_text, asked, asking, bar, chain, node_label, until

pytestmark = pytest.mark.anyio


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

    monkeypatch.setattr("dagger_nb.notebook.dashboards._base.render_svg", missing)
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


async def test_zoom_scales_the_graph_and_holds_across_redraws(executor: DagExecutor) -> None:
    import re

    gate = anyio.Event()

    async def step(x: int = -1) -> int:
        if x == 0:
            await gate.wait()
        return x + 1

    executor.registry.register("step", step)
    executor.add_workflow(chain("zoomed", "step", 3))
    handle = executor.start("zoomed")
    dashboard = RunDashboard(handle, interval=0)
    await until(lambda: "<title>n1</title>" in dashboard.graph.widget.value
                and "running" in node_label(dashboard.graph.widget.value, "n1"), 5, "no live graph")
    fitted = dashboard.graph.widget.value
    assert "dagger-zoom" in dashboard.graph.zoom._dom_classes and dashboard.graph.zoom in dashboard.children
    assert "max-width:100%" in fitted and "data-zoom='0'" in fitted and "overflow:auto" in fitted
    natural = re.search(r'<svg[^>]*?width="([\d.]+)pt"', fitted)
    assert natural is not None
    dashboard.graph.zoom.value = 2.0
    zoomed = dashboard.graph.widget.value
    width = re.search(r'style="width:([\d.]+)pt;height:([\d.]+)pt;max-width:none', zoomed)
    assert width is not None and float(width.group(1)) == pytest.approx(2 * float(natural.group(1)), abs=0.1)
    renders = dashboard.graph.renders
    gate.set()
    await handle.wait()
    dashboard.graph.join(timeout=30)
    final = dashboard.graph.widget.value
    assert dashboard.graph.renders > renders and "succeeded" in node_label(final, "n2")
    assert "data-zoom='2'" in final  # the user's zoom holds when the graph is drawn again
    dashboard.graph.zoom.value = 0.0
    assert "max-width:100%" in dashboard.graph.widget.value
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
        handle = manager.start("j")
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
    assert "shout_" not in all_text(monitor)  # the name given, no random suffix
    assert "&lt;img" in monitor.errors.value
    assert "<img" not in all_text(monitor) and "<IMG" not in all_text(monitor)
    monitor.graph.join(timeout=30)
    assert "<svg" in monitor.graph.widget.value
    bus.close()
    monitor.close()


async def test_a_pubsub_monitor_shown_after_many_messages_counts_them_all() -> None:
    from dagger_nb.pubsub import PubSub, PubSubAgentRegistry, pubsub_agent
    from dagger_nb.pubsub.bus import EVENT_WINDOW

    registry = PubSubAgentRegistry()

    @pubsub_agent("reader", subscribe=["words"], registry=registry)
    async def reader(message: Any, ctx: Any) -> None:
        pass

    count = EVENT_WINDOW  # two events each: most of them left the bus's window of events
    bus = PubSub(registry=registry, queue_size=count)
    bus.register("reader")
    for number in range(count):
        await bus.publish("words", number)
    await bus.run(until_idle=True)
    assert len(bus.events.history) < 2 * count
    monitor = PubSubMonitor(bus)  # shown once delivery ended
    monitor.refresh()
    assert f"&nbsp;{count}<" in monitor.header.value  # the messages badge
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
