"""The dashboards stay current while work runs and show what users look for (through widget state)."""

from __future__ import annotations

import html
import itertools
import re
import time
from typing import Any

import anyio
import pytest

from dagger_nb import ActionRegistry, DagExecutor, WorkflowSpec
from dagger_nb.export import short_id
from dagger_nb.graph import STATUS_COLOURS
from dagger_nb.notebook import JobDashboard, PubSubMonitor, RunDashboard
from tests.notebook.dashboard_helpers import XSS, asked, asking, bar, node_label, until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def executor() -> Any:
    async with DagExecutor(ActionRegistry()) as executor:
        yield executor


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
        handle = manager.start("j")
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
        handle = manager.start("j")
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


async def test_a_closed_dashboard_ignores_a_resumed_run(executor: DagExecutor) -> None:
    broken = [True]

    def flaky() -> int:
        if broken[0]:
            raise KeyError("body")
        return 1

    executor.registry.register("flaky", flaky)
    executor.add_workflow(WorkflowSpec.model_validate({
        "name": "pc", "nodes": [{"id": "a", "action": "flaky"}], "config": {"on_failure": "pause", "max_attempts": 1}}))
    handle = executor.start("pc")
    dashboard = RunDashboard(handle)
    await handle.wait()
    redraws = dashboard.redraws
    dashboard.close()
    broken[0] = False
    await executor.start_resume(handle.run_id).wait()
    assert dashboard.redraws == redraws and dashboard.finished


async def test_a_pubsub_monitor_graph_catches_up_when_the_bus_goes_idle() -> None:
    from dagger_nb.pubsub import PubSub, PubSubAgentRegistry, pubsub_agent

    registry = PubSubAgentRegistry()
    handled: list[float] = []

    @pubsub_agent("count", subscribe=["in"], registry=registry)
    async def count(message: Any, ctx: Any) -> None:
        handled.append(time.monotonic())

    bus = PubSub(registry=registry)
    bus.register("count")
    handle = bus.start()
    monitor = PubSubMonitor(bus, handle=handle)
    for i in range(3):
        await bus.publish("in", {"i": i})
    await until(lambda: len(handled) == 3, 10, "the messages were not handled")
    await until(lambda: monitor.events_seen > 0 and monitor.graph.shown_version == (monitor.events_seen, 1), 5,
                "the graph stayed stale once the bus went idle")
    assert time.monotonic() - handled[-1] <= 1.5
    assert "running" in monitor.header.value and not monitor.finished
    bus.stop()
    await handle.wait()
    bus.close()
    monitor.close()
