"""Per-node logs (prints and logging inside an action) and trimmed tracebacks on the outcome."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import anyio
import pytest

from dagger_nb import ActionRegistry, DagExecutor, WorkflowSpec
from dagger_nb._capture import LogBuffer, capture_into
from dagger_nb._traceback import format_failure
from dagger_nb.dag.events import NodeFailed

pytestmark = pytest.mark.anyio


def workflow(name: str, *nodes: tuple[str, str], **config: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {"name": name, "nodes": [{"id": i, "action": a} for i, a in nodes], "config": config}
    )


async def test_prints_and_logs_are_kept_per_node_and_still_reach_the_output(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    both_running = anyio.Event()
    arrived: list[str] = []

    async def talk(name: str) -> None:
        arrived.append(name)
        if len(arrived) == 2:
            both_running.set()
        await both_running.wait()  # the two nodes print at the same time
        for i in range(3):
            print(f"{name} says {i}")
            logging.getLogger("demo").warning("%s warns %d", name, i)
            await anyio.sleep(0)

    async def first() -> None:
        await talk("first")

    def blocking() -> None:  # a sync action: runs in a worker thread
        print("from a thread", end="")
        print(" in two writes")
        logging.getLogger("demo.sync").error("thread error")

    async with DagExecutor(ActionRegistry()) as executor:
        executor.registry.register("first", first)
        executor.registry.register("second", lambda: talk("second"))
        executor.registry.register("blocking", blocking)
        executor.add_workflow(workflow("talk", ("a", "first"), ("b", "second"), ("c", "blocking")))
        report = await executor.run("talk")
    assert report.success, report.error
    logs = {node: outcome.logs for node, outcome in report.outcomes.items()}
    assert logs["a"] == [line for i in range(3) for line in (f"first says {i}", f"WARNING:demo: first warns {i}")]
    assert logs["b"] == [line for i in range(3) for line in (f"second says {i}", f"WARNING:demo: second warns {i}")]
    assert logs["c"] == ["from a thread in two writes", "ERROR:demo.sync: thread error"]
    out, _ = capsys.readouterr()
    assert "first says 2" in out and "second says 0" in out and "from a thread in two writes" in out
    assert "first warns 1" in caplog.text and "thread error" in caplog.text  # the handlers still get every record


async def test_logs_are_bounded() -> None:
    buffer = LogBuffer(max_lines=5, max_chars=10)
    with capture_into(buffer):
        for i in range(8):
            print(f"line {i} " + "x" * 20)
    assert buffer.lines == ["… 3 earlier lines not kept", *(f"line {i} xx…" for i in range(3, 8))]


def test_a_long_node_shows_its_latest_lines_while_it_prints() -> None:
    buffer = LogBuffer(max_lines=5)
    seen = buffer.lines  # the list the node's outcome (and so the live log panel) holds
    for i in range(1234 + 3):
        buffer.write("stdout", f"line {i}\n")
    assert seen == ["… 1,232 earlier lines not kept", *(f"line {i}" for i in range(1232, 1237))]
    buffer.write("stdout", "line 1237\n")
    assert seen[0] == "… 1,233 earlier lines not kept" and seen[-1] == "line 1237" and len(seen) == 6
    buffer.close()
    assert seen[0] == "… 1,233 earlier lines not kept" and len(seen) == 6


def _cpu_seconds_for(writes: int) -> float:
    """The least CPU time of three buffers each taking ``writes`` redraws of a progress bar."""
    best = math.inf
    for _ in range(3):
        buffer = LogBuffer()
        started = time.process_time()
        for i in range(writes):
            buffer.write("stderr", f"\r{i:>8} it/s progress bar ..........")
        best = min(best, time.process_time() - started)
    return best


def test_progress_bar_redraws_cost_time_in_proportion_to_their_number() -> None:
    small, large = _cpu_seconds_for(4_000), _cpu_seconds_for(40_000)
    assert large < 20 * max(small, 1e-3), (small, large)
    buffer = LogBuffer(max_chars=50)
    for i in range(1000):
        buffer.write("stderr", f"\r{i:>4}% done")
    buffer.write("stderr", "\r100% done\r\n")  # redrawn in place, then the line ends
    for _ in range(100):  # a line that never ends is kept no longer than a line is
        buffer.write("stdout", "x" * 1000)
    buffer.close()
    assert buffer.lines == ["100% done", "x" * 49 + "…"]


async def test_a_logging_call_is_kept_once_when_its_handler_writes_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def warns() -> None:  # no handler configured: Python's lastResort handler writes to stderr
        quiet = logging.getLogger("dagger_test.no_handler")
        quiet.propagate = False
        quiet.warning("once %d", 1)
        own = logging.getLogger("dagger_test.stream_handler")  # as after logging.basicConfig()
        own.propagate = False
        handler = logging.StreamHandler(sys.stderr)
        own.addHandler(handler)
        try:
            own.error("also once")
        finally:
            own.removeHandler(handler)
        print("a print still counts", file=sys.stderr)

    async with DagExecutor(ActionRegistry()) as executor:
        executor.registry.register("warns", warns)
        executor.add_workflow(workflow("warns", ("w", "warns")))
        report = await executor.run("warns")
    assert report.success, report.error
    assert report.outcomes["w"].logs == [
        "WARNING:dagger_test.no_handler: once 1", "ERROR:dagger_test.stream_handler: also once",
        "a print still counts",
    ]
    _, err = capsys.readouterr()
    assert "once 1" in err and "also once" in err and "a print still counts" in err  # the cell still shows them


def helper(payload: dict[str, Any]) -> Any:
    return payload["body"]


async def test_a_failed_node_carries_its_traceback_trimmed_to_the_users_frames() -> None:
    def parse() -> Any:
        return helper({})

    failed: list[NodeFailed] = []
    async with DagExecutor(ActionRegistry()) as executor:
        executor.registry.register("parse", parse)
        executor.add_workflow(workflow("tb", ("p", "parse"), max_attempts=1))
        handle = executor.start("tb")
        handle.add_listener(lambda event: isinstance(event, NodeFailed) and failed.append(event))
        report = await handle.wait()
    trace = report.outcomes["p"].traceback
    assert trace is not None and trace == failed[0].traceback
    lines = trace.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and lines[-1] == "KeyError: 'body'"
    assert "in parse" in trace and "in helper" in trace and 'return payload["body"]' in trace
    assert "dagger_nb" not in trace and "anyio" not in trace and "threading" not in trace


def test_chained_exceptions_are_told_cause_first() -> None:
    try:
        try:
            helper({})
        except KeyError as missing:
            raise ValueError("no body in the request") from missing
    except ValueError as error:
        text = format_failure(error)
    assert text.index("KeyError: 'body'") < text.index("direct cause") < text.index("ValueError: no body")


# -- beyond the DAG: task outputs and pub/sub dead letters ----------------------------------------


def _registry_with_failing_agents() -> Any:
    from dagger_nb.agents import TaskAgentRegistry

    registry = TaskAgentRegistry()

    async def parse_async(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"body": helper(input)}

    attempts: list[int] = []

    def parse_sync(input: dict[str, Any], ctx: Any) -> dict[str, Any]:  # a sync agent: a worker thread
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt")
        return {"body": helper(input)}

    registry.register("parse_async", parse_async)
    registry.register("parse_sync", parse_sync)
    return registry


async def test_a_failed_task_keeps_the_last_attempts_traceback_across_a_reopen(tmp_path: Any) -> None:
    from dagger_nb.agents import TaskManager

    db = tmp_path / "jobs.db"
    async with TaskManager(db, registry=_registry_with_failing_agents()) as manager:
        manager.add_task("j", "parse async", "parse_async", {}, task_id="t-async")
        manager.add_task("j", "parse sync", "parse_sync", {}, task_id="t-sync", max_retries=1)
        report = await manager.run("j")
    for task_id in ("t-async", "t-sync"):
        output = report.outcomes[task_id].output
        assert output is not None and output.error == "KeyError: 'body'"
        trace = output.traceback
        assert trace is not None, task_id
        lines = trace.splitlines()
        assert lines[0] == "Traceback (most recent call last):" and lines[-1] == "KeyError: 'body'"
        assert "in helper" in trace and 'return payload["body"]' in trace
        assert "dagger_nb" not in trace and "anyio" not in trace and "threading" not in trace
    assert "first attempt" not in report.outcomes["t-sync"].output.traceback  # type: ignore[union-attr]
    async with TaskManager(db, registry=_registry_with_failing_agents()) as reopened:
        stored = reopened.get_task("t-sync")
        assert stored is not None and stored.output is not None
        assert stored.output.traceback == report.outcomes["t-sync"].output.traceback  # type: ignore[union-attr]


async def test_a_job_dashboard_and_export_fold_the_tasks_traceback_under_its_error() -> None:
    from dagger_nb.agents import TaskManager
    from dagger_nb.export import job_report_to_html, job_report_to_json
    from dagger_nb.notebook import JobDashboard

    async with TaskManager(registry=_registry_with_failing_agents()) as manager:
        manager.add_task("j", "parse async", "parse_async", {}, task_id="t-async")
        handle = manager.start("j")
        dashboard = JobDashboard(manager, "j", handle=handle, interval=0)
        report = await handle.wait()
        await dashboard.wait()
        errors = dashboard.errors.value
        dashboard.close()
    summary = errors.split("<pre", 1)[0]  # the summary line, outside the folded traceback
    assert summary.count("KeyError: &#x27;body&#x27;") == 1
    assert "<details class='dagger-traceback'>" in errors and "in helper" in errors
    import json

    assert "in helper" in job_report_to_html(report)
    (task,) = json.loads(job_report_to_json(report))["tasks"]
    assert task["traceback"].splitlines()[-1] == "KeyError: 'body'"


@pytest.mark.parametrize("sync", [False, True])
async def test_a_dead_letter_and_the_monitor_carry_the_handlers_traceback(sync: bool) -> None:
    from dagger_nb.notebook import PubSubMonitor
    from dagger_nb.pubsub import PubSub, PubSubAgentRegistry, pubsub_agent
    from dagger_nb.pubsub.events import HandlerFailed

    registry = PubSubAgentRegistry()

    def handle(message: Any, ctx: Any) -> None:
        helper(message.payload)

    async def handle_async(message: Any, ctx: Any) -> None:
        helper(message.payload)

    pubsub_agent("reader", subscribe=["requests"], registry=registry)(handle if sync else handle_async)
    bus = PubSub(registry=registry)
    bus.register("reader")
    failures: list[HandlerFailed] = []
    bus.events.add_listener(lambda event: isinstance(event, HandlerFailed) and failures.append(event))
    monitor = PubSubMonitor(bus)
    await bus.publish("requests", {"no": "body"})
    await bus.run(until_idle=True)
    (letter,) = bus._dead
    trace = letter.traceback
    assert trace is not None and trace == failures[0].traceback
    assert trace.splitlines()[-1] == "KeyError: 'body'" and "in helper" in trace
    assert "dagger_nb" not in trace and "anyio" not in trace
    monitor.refresh()
    assert "<details class='dagger-traceback'>" in monitor.errors.value and "in helper" in monitor.errors.value
    bus.close()
    monitor.close()


# -- the run store keeps them ---------------------------------------------------------------------


async def test_a_run_loaded_from_disk_keeps_tracebacks_and_bounded_logs(tmp_path: Any) -> None:
    import sqlite3

    from dagger_nb.dag import store as run_store
    from dagger_nb.export import report_to_html, report_to_json

    def chatty() -> int:
        for i in range(3):
            print(f"line {i}")
        return 1

    def parse() -> Any:
        print("about to parse")
        return helper({})

    db = tmp_path / "runs.db"
    async with DagExecutor(ActionRegistry(), db=db) as executor:
        executor.registry.register("chatty", chatty)
        executor.registry.register("parse", parse)
        executor.add_workflow(workflow("kept", ("talk", "chatty"), ("p", "parse"), max_attempts=1,
                                       on_failure="continue"))
        report = await executor.run("kept")
    assert report.outcomes["p"].traceback is not None
    store = run_store.RunStore(db)
    try:
        run = store.load_run(report.run_id, config_for=lambda spec: executor._effective_config(spec))
    finally:
        store.close()
    assert run is not None
    loaded = run.snapshot()
    assert loaded.outcomes["p"].traceback == report.outcomes["p"].traceback
    assert loaded.outcomes["p"].logs == ["about to parse"]
    assert loaded.outcomes["talk"].logs == ["line 0", "line 1", "line 2"] and loaded.outcomes["talk"].traceback is None
    page = report_to_html(loaded)
    assert "<details class='dagger-traceback'><summary><b>p</b>" in page and "in helper" in page
    assert "about to parse" in page and "line 2" in page
    import json

    nodes = {node["node"]: node for node in json.loads(report_to_json(loaded))["nodes"]}
    assert nodes["p"]["traceback"].endswith("KeyError: 'body'") and nodes["talk"]["logs"][-1] == "line 2"
    # bounded: a huge traceback keeps its end (the error), huge logs a note of what was left out
    huge = replace_outcome(loaded.outcomes["p"], traceback="x" * 50_000 + "\nKeyError: 'body'",
                           logs=["y" * 1000] * 1000)
    row = run_store._node_row(report.run_id, huge, 0)
    assert len(row[-2]) < 20_100 and row[-2].endswith("KeyError: 'body'")
    stored_logs = json.loads(row[-1])
    assert len(stored_logs) == 201 and stored_logs[-1] == "… 800 more lines not kept"
    # a file written before the columns existed still opens, its nodes with no traceback or logs
    with sqlite3.connect(db) as connection:
        connection.execute("ALTER TABLE dag_nodes DROP COLUMN logs")
        connection.execute("ALTER TABLE dag_nodes DROP COLUMN traceback")
    store = run_store.RunStore(db)
    try:
        old = store.load_run(report.run_id, config_for=lambda spec: executor._effective_config(spec))
    finally:
        store.close()
    assert old is not None and old.snapshot().outcomes["p"].traceback is None


def replace_outcome(outcome: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(outcome, **changes)
