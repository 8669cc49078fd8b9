"""What the dashboard tests share: workflows, readers of the panels, a deadline poll, a run that asks."""

from __future__ import annotations

import re
import time
from typing import Any

import anyio

import dagger_nb
from dagger_nb import DagExecutor, NodeContext, WorkflowSpec
from dagger_nb.dag import RunHandle
from dagger_nb.dag.events import HumanInputRequested

XSS = "<img src=x onerror=alert(1)>"


def chain(name: str, action: str, length: int, **config: Any) -> WorkflowSpec:
    """``length`` nodes in a row, each reading the one before."""
    nodes: list[dict[str, Any]] = [{"id": "n0", "action": action}]
    for i in range(1, length):
        nodes.append({"id": f"n{i}", "action": action, "inputs": [{"name": "x", "reference": f"n{i - 1}.result"}]})
    return WorkflowSpec.model_validate({"name": name, "nodes": nodes, "config": config})


def all_text(dashboard: Any) -> str:
    panels = [dashboard.header, dashboard.table, dashboard.errors, dashboard.graph.widget]
    if dashboard.agent_panel is not None:
        panels.append(dashboard.agent_panel)
    return "\n".join(panel.value for panel in panels)


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
