"""Per-task logs: what a task agent prints or logs is kept on its output (bounded), stored with the
task, still written to the output, and shown (escaped) in the job dashboard and the job export."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import dagger_nb
from dagger_nb._capture import MAX_LINES
from dagger_nb.export import job_report_to_html, job_report_to_json

STRAY = os.fsdecode(b"\xff")  # a lone surrogate, as a stray byte in a file name becomes


@pytest.fixture
def registry() -> dagger_nb.TaskAgentRegistry:
    return dagger_nb.TaskAgentRegistry()


def output_of(manager: dagger_nb.TaskManager, task_id: str) -> Any:
    task = manager.get_task(task_id)
    assert task is not None and task.output is not None
    return task.output


def test_two_sync_agents_printing_at_once_keep_their_own_lines(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    lockstep = threading.Barrier(2, timeout=10)  # each line of one is printed between two of the other

    def talker(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        for i in range(20):
            lockstep.wait()
            print(f"{input['name']} line {i}")
            if i % 5 == 0:
                logging.getLogger("talk").warning("%s at %d", input["name"], i)
        return {"done": True}

    registry.register("talker", talker)
    db = tmp_path / "jobs.db"
    with dagger_nb.TaskManager(db, registry=registry, max_parallel_tasks=2) as manager:
        manager.add_task("job", "a", "talker", {"name": "A"}, task_id="a")
        manager.add_task("job", "b", "talker", {"name": "B"}, task_id="b")
        report = manager.run_sync("job")
        assert report.status is dagger_nb.JobStatus.COMPLETED
        for name in ("a", "b"):
            expected = []
            for i in range(20):
                expected.append(f"{name.upper()} line {i}")
                if i % 5 == 0:
                    expected.append(f"WARNING:talk: {name.upper()} at {i}")
            assert output_of(manager, name).logs == expected
    out, _ = capsys.readouterr()
    assert "A line 19\n" in out and "B line 19\n" in out  # still printed as before
    with dagger_nb.TaskManager(db, registry=registry) as reopened:  # stored with the task
        assert output_of(reopened, "a").logs[:2] == ["A line 0", "WARNING:talk: A at 0"]
        assert output_of(reopened, "b").logs[-1] == "B line 19"


def test_async_agent_logs_survive_a_reopen_escaped_and_bounded(
    tmp_path: Path, registry: dagger_nb.TaskAgentRegistry
) -> None:
    async def chatty(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        for i in range(MAX_LINES + 50):
            print(f"line {i}")
        return {}

    async def failing(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        print("name " + STRAY, end="")
        await anyio.sleep(0)
        print(" <b>bold</b>")
        raise KeyError("body")

    async def silent(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"x": 1}

    registry.register("chatty", chatty)
    registry.register("failing", failing)
    registry.register("silent", silent)
    db = tmp_path / "jobs.db"
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        manager.add_task("job", "chatty", "chatty", task_id="chatty")
        manager.add_task("job", "failing", "failing", task_id="failing", max_retries=0)
        manager.add_task("job", "silent", "silent", task_id="silent")
        manager.run_sync("job")
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        logs = output_of(manager, "chatty").logs
        assert len(logs) == MAX_LINES + 1  # the lines kept and one saying how many were not
        assert [line for line in logs if "not kept" in line] == [
            line for line in logs if line.startswith("… 50 ") and line.endswith(" lines not kept")
        ] != []
        assert sum(line.startswith("line ") for line in logs) == MAX_LINES
        failed = output_of(manager, "failing")
        assert failed.logs == ["name \\udcff <b>bold</b>"] and "KeyError" in (failed.traceback or "")
        assert output_of(manager, "silent").logs is None


def test_logs_are_in_the_job_export_escaped(tmp_path: Path, registry: dagger_nb.TaskAgentRegistry) -> None:
    def shouting(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        print("<script>alert(1)</script>")
        raise ValueError("no")

    registry.register("shouting", shouting)
    with dagger_nb.TaskManager(registry=registry) as manager:
        manager.add_task("job", "shout", "shouting", task_id="shout", max_retries=0)
        report = manager.run_sync("job")
    page = job_report_to_html(report, dot="")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert '"logs": [\n        "<script>alert(1)</script>"' in job_report_to_json(report)


def test_the_job_dashboard_shows_the_logs_escaped(tmp_path: Path, registry: dagger_nb.TaskAgentRegistry) -> None:
    pytest.importorskip("ipywidgets")
    from dagger_nb.notebook import JobDashboard

    def noisy(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        print("<img src=x onerror=alert(1)> " + STRAY)
        logging.getLogger("noisy").error("done & dusted")
        return {}

    registry.register("noisy", noisy)
    db = tmp_path / "jobs.db"
    with dagger_nb.TaskManager(db, registry=registry) as manager:
        manager.add_task("job", "noisy", "noisy", task_id="noisy-task")
        manager.run_sync("job")
    with dagger_nb.TaskManager(db, registry=registry) as reopened:
        dashboard = JobDashboard(reopened, "job")  # a stored job, drawn once
        shown = dashboard.logs.value
        assert dashboard.logs in dashboard.children
    assert "noisy-task" in shown and "(2 lines, completed)" in shown
    assert "&lt;img src=x onerror=alert(1)&gt; \\udcff" in shown and "<img" not in shown
    assert "ERROR:noisy: done &amp; dusted" in shown
