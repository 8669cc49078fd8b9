"""A finished run as a timeline frame, a self-contained HTML page and JSON."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from dagger_nb import ActionRegistry, DagExecutor, WorkflowSpec
from dagger_nb.export import Span, assign_lanes

pytestmark = pytest.mark.anyio

XSS = "<script>alert(1)</script>"


async def run_mixed() -> Any:
    async def quick(x: int = 0) -> int:
        print(f"quick got {x} {XSS}")
        await anyio.sleep(0.01)
        return x + 1

    def broken(x: int = 0) -> int:
        raise KeyError(XSS)

    async with DagExecutor(ActionRegistry()) as executor:
        executor.registry.register("quick", quick)
        executor.registry.register("broken", broken)
        executor.add_workflow(WorkflowSpec.model_validate({"name": "mixed", "nodes": [
            {"id": "a", "action": "quick"},
            {"id": "b", "action": "quick", "inputs": [{"name": "x", "reference": "a.result"}]},
            {"id": "c", "action": "quick", "inputs": [{"name": "x", "reference": "a.result"}]},
            {"id": "bad", "action": "broken", "inputs": [{"name": "x", "reference": "a.result"}]},
            {"id": "after", "action": "quick", "inputs": [{"name": "x", "reference": "bad.result"}]},
        ], "config": {"on_failure": "continue", "max_attempts": 1}}))
        return await executor.run("mixed")


def test_lanes_never_overlap() -> None:
    spans = [Span("a", "x", "succeeded", 0, 2), Span("b", "x", "succeeded", 1, 3), Span("c", "x", "succeeded", 2, 4),
             Span("d", "x", "running", 3.5, None), Span("e", "x", "succeeded", 4, 5)]
    assert assign_lanes(spans) == [0, 1, 0, 1, 0]


def test_nodes_run_on_dask_workers_get_lanes_per_worker() -> None:
    from dagger_nb.export import lane_layout, timeline_svg

    spans = [Span("a", "x", "succeeded", 0, 2, "tcp://10.0.0.7:4001"), Span("b", "x", "succeeded", 1, 3,
             "tcp://10.0.0.7:4001"), Span("c", "x", "running", 0, None, "tcp://10.0.0.8:4001")]
    lanes, labels = lane_layout(spans)
    assert labels == ["10.0.0.7:4001 · 1", "10.0.0.7:4001 · 2", "10.0.0.8:4001 · 1"] and lanes == [0, 1, 2]
    svg = timeline_svg(spans, now=4)
    assert svg.count("class='dagger-span'") == 3 and "10.0.0.8:4001" in svg


async def test_timeline_frame_has_one_row_per_started_node() -> None:
    report = await run_mixed()
    frame = report.timeline_frame()
    assert list(frame.columns) == ["node", "action", "status", "worker", "lane", "start", "finish", "duration_s"]
    assert set(frame["lane"]) <= {"slot 1", "slot 2", "slot 3", "slot 4"} and frame["worker"].isna().all()
    assert set(frame["node"]) == {"a", "b", "c", "bad"}  # 'after' was skipped: it never started
    assert frame.iloc[0]["node"] == "a" and (frame["finish"] >= frame["start"]).all()
    for lane, rows in frame.groupby("lane"):
        ordered = rows.sort_values("start")
        starts, finishes = list(ordered["start"]), list(ordered["finish"])
        assert all(start >= finish for start, finish in zip(starts[1:], finishes[:-1], strict=True)), lane


async def test_html_export_is_self_contained_and_escaped(tmp_path: Path) -> None:
    report = await run_mixed()
    path = tmp_path / "run.html"
    page = report.to_html(path)
    assert path.read_text(encoding="utf-8") == page
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page.replace(
        "http://www.w3.org", "")
    assert html.escape(XSS) in page
    assert "<h2>Graph</h2><svg" in page or "could not be drawn" in page
    assert "class='dagger-timeline'" in page and page.count("class='dagger-span'") == 4
    assert "<details class='dagger-traceback'><summary><b>bad</b>" in page and "in broken" in page
    assert "quick got 1" in page
    assert re.search(r"title='3 succeeded'.*title='1 failed'.*title='1 skipped'", page)


async def test_json_export_round_trips_the_outcomes() -> None:
    report = await run_mixed()
    document = json.loads(report.to_json())
    assert document["workflow"] == "mixed" and document["status"] == "failed"
    nodes = {node["node"]: node for node in document["nodes"]}
    assert nodes["bad"]["status"] == "failed" and nodes["bad"]["traceback"].endswith(f"KeyError: '{XSS}'")
    assert nodes["b"]["logs"] == [f"quick got 1 {XSS}"] and nodes["after"]["status"] == "skipped"
    assert document["counts"] == {"succeeded": 3, "failed": 1, "skipped": 1}


async def test_a_job_report_exports_as_html_and_json(tmp_path: Path) -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager
    from dagger_nb.export import job_report_to_html, job_report_to_json

    registry = TaskAgentRegistry()

    async def plan(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ctx.add_task(f"step {XSS}", "work", {"i": 1})
        ctx.add_task("broken step", "work", {"i": 2})
        return {"planned": 2}

    async def work(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        if input["i"] == 2:
            raise ValueError(XSS)
        return {"text": f"line one\nline two {XSS}"}

    registry.register("plan", plan)
    registry.register("work", work)
    async with TaskManager(registry=registry) as manager:
        manager.add_objective("j", "plan two steps", "plan")
        report = await manager.start("j")
        dot = manager.to_dot("j")
    page = job_report_to_html(report, tmp_path / "job.html", dot=dot)
    assert (tmp_path / "job.html").read_text(encoding="utf-8") == page
    assert "<script" not in page and html.escape(f"step {XSS}") in page
    assert html.escape(f'{{"text": "line one line two {XSS}"}}') in page
    assert "<h2>Graph</h2><svg" in page or "could not be drawn" in page
    assert "<b>task-" in page and "ValueError" in page  # the failed task, in the error list
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.started_at))
    assert f"started {started}</p>" in page
    document = json.loads(job_report_to_json(report))
    assert document["job_id"] == "j" and len(document["tasks"]) == 3
    # times as a DAG run's: seconds since the epoch
    assert (document["started_at"], document["finished_at"]) == (report.started_at, report.finished_at)
    assert isinstance(report.started_at, float) and report.started_at <= report.finished_at <= time.time()
    assert document["error"] is None
    assert {task["status"] for task in document["tasks"]} >= {"completed", "failed"}


STRAY = "name \udcff.csv"  # a file name as os.listdir decodes bytes that are not UTF-8


async def test_a_run_that_printed_a_stray_surrogate_still_exports(tmp_path: Path) -> None:
    def lists() -> str:
        print(f"found {STRAY}")
        return STRAY

    def fails() -> None:
        raise FileNotFoundError(STRAY)

    async with DagExecutor(ActionRegistry()) as executor:
        executor.registry.register("lists", lists)
        executor.registry.register("fails", fails)
        executor.add_workflow(WorkflowSpec.model_validate({"name": "files", "nodes": [
            {"id": "ls", "action": "lists"}, {"id": "open", "action": "fails"},
        ], "config": {"on_failure": "continue", "max_attempts": 1}}))
        report = await executor.run("files")
    assert report.outcomes["ls"].logs == ["found name \\udcff.csv"]
    page = report.to_html(tmp_path / "run.html")
    written = (tmp_path / "run.html").read_bytes().decode("utf-8")
    assert STRAY in page  # the traceback keeps the error's text as raised
    assert "found name \\udcff.csv" in written and "FileNotFoundError" in written
    assert written == page.replace(STRAY, "name \\udcff.csv")  # the error's file name, escaped on the way out
    text = report.to_json()
    document = json.loads(text.encode("utf-8"))
    nodes = {node["node"]: node for node in document["nodes"]}
    assert nodes["ls"]["logs"] == ["found name \\udcff.csv"]
    assert nodes["open"]["traceback"].endswith(f"FileNotFoundError: {STRAY}")


async def test_a_job_whose_output_holds_a_stray_surrogate_still_exports(tmp_path: Path) -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager

    registry = TaskAgentRegistry()

    async def lists(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"files": [STRAY]}

    registry.register("lists", lists)
    async with TaskManager(registry=registry) as manager:
        manager.add_objective("j", "list the files", "lists")
        report = await manager.start("j")
    assert [task.output.data for task in report.outcomes.values()] == [{"files": [STRAY]}]
    report.to_html(tmp_path / "job.html")
    assert "name \\udcff.csv" in (tmp_path / "job.html").read_bytes().decode("utf-8")
    document = json.loads(report.to_json().encode("utf-8"))
    assert [task["output"] for task in document["tasks"]] == [{"files": [STRAY]}]
