"""Run DOT (escaped, coloured by status), render_svg, and the report's frame and HTML."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

import dagger_nb
from dagger_nb import ActionRegistry, GraphvizNotFound
from dagger_nb.graph import STATUS_COLOURS
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio

NASTY = 'say "hi" <img src=x onerror=alert(1)> & \\ bye\nsecond line'


@pytest.fixture
def registry() -> ActionRegistry:
    registry = ActionRegistry()
    registry.register("ok", lambda: 1, inline=True)
    registry.register("bad", _raise(NASTY))
    return registry


def _raise(message: str):  # type: ignore[no-untyped-def]
    def action() -> None:
        raise ValueError(message)

    return action


async def test_run_dot_is_coloured_by_status_with_edges(registry: ActionRegistry) -> None:
    spec = workflow("colours", {"id": "a", "action": "ok"}, {"id": "b", "action": "bad", "onfailure": False},
                    {"id": "c", "action": "ok", "dependencies": ["b"]}, on_failure="continue")
    report = await executor_with(registry, spec).run("colours")
    dot = report.to_dot()
    assert dot.startswith('digraph "colours" {') and "rankdir=LR;" in dot
    assert '"a" [label="a\\naction: ok\\nsucceeded · attempts 1' in dot
    assert f'fillcolor="{STATUS_COLOURS["succeeded"]}"' in dot
    assert f'fillcolor="{STATUS_COLOURS["failed"]}"' in dot
    assert f'fillcolor="{STATUS_COLOURS["skipped"]}"' in dot
    assert '"b" -> "c";' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
async def test_nasty_ids_and_errors_still_render_and_are_escaped(registry: ActionRegistry) -> None:
    node_id = 'n"<b>&\nx'
    spec = workflow(NASTY, {"id": node_id, "action": "bad", "onfailure": False, "description": NASTY})
    report = await executor_with(registry, spec).run(NASTY)
    svg = dagger_nb.render_svg(report.to_dot())
    root = ET.fromstring(svg.encode())  # well-formed XML: every piece of text was escaped
    texts = " ".join(t for t in root.itertext())
    assert "<img" in texts  # shown as text ...
    assert "<img" not in svg  # ... never as markup


def test_render_svg_without_graphviz_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GraphvizNotFound, match="apt-get install graphviz"):
        dagger_nb.render_svg("digraph { a }")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_render_svg_reports_invalid_dot() -> None:
    with pytest.raises(dagger_nb.DaggerError, match="Graphviz could not render the graph"):
        dagger_nb.render_svg("digraph { a -> }")


async def test_report_frame_and_html(registry: ActionRegistry) -> None:
    spec = workflow("table", {"id": "a", "action": "ok"}, {"id": NASTY, "action": "bad", "onfailure": False},
                    on_failure="continue")
    report = await executor_with(registry, spec).run("table")
    frame = report.to_frame()
    assert list(frame.columns) == ["node", "action", "status", "attempts", "started_at", "finished_at",
                                   "duration_s", "error", "worker", "cached_from", "reason",
                                   "tokens", "cost", "models"]
    assert list(frame["status"]) == ["succeeded", "failed"]
    assert frame["worker"].isna().all()  # this process: no worker column in the HTML either
    assert str(frame["started_at"].dtype).startswith("datetime64") and (frame["duration_s"] >= 0).all()
    html = report._repr_html_()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<th>worker</th>" not in html
    assert report.counts() == {"succeeded": 1, "failed": 1}
    assert "run" in repr(report) and "1 failed" in repr(report)


async def test_to_dot_by_workflow_or_run(registry: ActionRegistry) -> None:
    executor = executor_with(registry, workflow("w", {"id": "a", "action": "ok"}))
    before = executor.to_dot("w")
    assert f'fillcolor="{STATUS_COLOURS["pending"]}"' in before
    report = await executor.run("w")
    assert executor.to_dot("w") == executor.to_dot(report.run_id) == report.to_dot()
    with pytest.raises(dagger_nb.RunNotFound):
        executor.to_dot("unknown")
