"""Per-node logs (prints and logging inside an action) and trimmed tracebacks on the outcome."""

from __future__ import annotations

import logging
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
        report = await executor.execute_dag("talk")
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
    assert len(buffer.lines) == 6
    assert buffer.lines[0] == "line 0 xx…" and buffer.lines[-1] == "… 3 more lines not kept"


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
