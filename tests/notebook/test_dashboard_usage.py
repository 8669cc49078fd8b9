"""The run and job dashboards show the tokens and cost the work reported: live, at the end, escaped."""

from __future__ import annotations

import html
from typing import Any

import anyio
import pytest

from dagger_nb import ActionRegistry, DagExecutor, WorkflowSpec
from dagger_nb.notebook import JobDashboard, RunDashboard
from tests.notebook.dashboard_helpers import until

pytestmark = pytest.mark.anyio

MODEL = "<b>x</b>"


def two_nodes(**config: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"name": "llm", "config": config, "nodes": [
        {"id": "ask", "action": "ask"},
        {"id": "wait", "action": "wait", "inputs": [{"name": "x", "reference": "ask.result"}]},
    ]})


def header_text(dashboard: Any) -> str:
    return html.unescape(dashboard.header.value)


async def test_the_run_header_and_table_show_usage_while_running_and_at_the_end() -> None:
    gate = anyio.Event()
    waiting = anyio.Event()

    async def ask(ctx: Any) -> int:
        ctx.record_usage(tokens=440, cost=0.0009, model=MODEL)
        return 1

    async def wait(ctx: Any, x: int) -> int:
        ctx.record_usage(tokens=60)
        waiting.set()
        await gate.wait()
        return x

    registry = ActionRegistry()
    registry.register("ask", ask)
    registry.register("wait", wait)
    async with DagExecutor(registry) as executor:
        executor.add_workflow(two_nodes(max_tokens=1000))
        handle = executor.start("llm")
        dashboard = RunDashboard(handle)
        await waiting.wait()
        # no further event comes: the clock's redraw brings the usage in
        await until(lambda: "500 tokens of 1,000 · $0.0009" in header_text(dashboard), 5, "no live usage")
        assert "running" in dashboard.header.value
        table = dashboard.table.value
        assert "<th style='text-align:left;padding:0 8px'>tokens</th>" in table
        assert MODEL not in table and html.escape(MODEL) in table  # the model name is escaped
        assert "440 · $0.0009 · <b>x</b>" in html.unescape(table)
        assert "<td style='padding:0 8px'>60</td>" in table
        gate.set()
        report = await handle.wait()
        assert report.success and dashboard.finished
        assert "500 tokens of 1,000 · $0.0009" in header_text(dashboard) and "succeeded" in dashboard.header.value
        assert "tokens" in dashboard.table.value
        dashboard.close()


async def test_a_run_without_usage_or_budget_shows_nothing_about_tokens() -> None:
    async def plain(x: int = 0) -> int:
        return x + 1

    registry = ActionRegistry()
    registry.register("ask", plain)
    registry.register("wait", plain)
    async with DagExecutor(registry) as executor:
        executor.add_workflow(two_nodes())
        handle = executor.start("llm")
        dashboard = RunDashboard(handle)
        await handle.wait()
        assert dashboard.finished
        assert "token" not in dashboard.header.value and "$" not in dashboard.header.value
        assert "token" not in dashboard.table.value
        dashboard.close()


async def test_a_budget_alone_shows_zero_of_it() -> None:
    async def plain(x: int = 0) -> int:
        return x + 1

    registry = ActionRegistry()
    registry.register("ask", plain)
    registry.register("wait", plain)
    async with DagExecutor(registry, max_tokens=2000) as executor:
        executor.add_workflow(two_nodes())
        handle = executor.start("llm")
        dashboard = RunDashboard(handle)
        await handle.wait()
        assert "0 tokens of 2,000" in header_text(dashboard)
        assert "tokens" not in dashboard.table.value  # no node reported any: the table keeps its columns
        dashboard.close()


async def test_the_job_header_and_table_show_usage_while_running_and_at_the_end() -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager

    registry = TaskAgentRegistry()
    gate = anyio.Event()
    spent = anyio.Event()

    async def work(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ctx.record_usage(tokens=1200, cost=0.25, model=MODEL)
        spent.set()
        await gate.wait()
        return {"done": True}

    registry.register("work", work)
    async with TaskManager(registry=registry, max_tokens=5000) as manager:
        manager.add_objective("j", "one step", "work")
        handle = manager.start("j")
        dashboard = JobDashboard(manager, "j", handle=handle)
        await spent.wait()
        await until(lambda: "1,200 tokens of 5,000 · $0.25" in header_text(dashboard), 5, "no live job usage")
        table = dashboard.table.value
        assert ">tokens</th>" in table and MODEL not in table
        assert "1,200 · $0.25 · <b>x</b>" in html.unescape(table)
        gate.set()
        await handle.wait()
        await until(lambda: dashboard.finished, 5, "the dashboard never finished")
        assert "1,200 tokens of 5,000 · $0.25" in header_text(dashboard)
        dashboard.close()


async def test_a_job_without_usage_shows_nothing_about_tokens() -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager

    registry = TaskAgentRegistry()

    async def work(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"done": True}

    registry.register("work", work)
    async with TaskManager(registry=registry) as manager:
        manager.add_objective("j", "one step", "work")
        handle = manager.start("j")
        dashboard = JobDashboard(manager, "j", handle=handle)
        await handle.wait()
        await until(lambda: dashboard.finished, 5, "the dashboard never finished")
        dashboard.refresh()
        assert "token" not in dashboard.header.value and "token" not in dashboard.table.value
        dashboard.close()
