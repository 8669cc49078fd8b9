"""Inspect one node of a run: its inputs, a preview of its outputs, its logs and its traceback.

A dropdown lists the run's nodes; choosing one shows, escaped:
each input (the reference or literal, and the value it had when the cache still
holds it), each output (a DataFrame's head as a table, anything else as a short
repr), what the node printed or logged, and the traceback of its last failed
attempt.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from dagger_nb.graph import STATUS_COLOURS
from dagger_nb.notebook.dashboards._base import _shorten

if TYPE_CHECKING:
    from dagger_nb.dag.report import ExecutionReport

_NONE = "(choose a node)"
_PREVIEW_ROWS = 5
_PREVIEW_CHARS = 400
_MISSING = object()


def preview_html(value: Any) -> str:
    """A short, escaped preview of ``value``: a DataFrame's (or Series') head as a table, else its repr."""
    head = getattr(value, "head", None)
    if callable(head) and hasattr(value, "to_html"):
        try:
            table: str = head(_PREVIEW_ROWS).to_html(escape=True, max_cols=20)
            shape = getattr(value, "shape", None)
            return f"{table}<div style='color:#666'>shape {html.escape(str(shape))}</div>"
        except Exception:  # an odd object with a head(): fall back to its repr
            pass
    text = _shorten(repr(value), _PREVIEW_CHARS)
    return f"<code style='white-space:pre-wrap'>{html.escape(text)}</code>"


def node_html(report: ExecutionReport, node_id: str) -> str:
    """Everything known about ``node_id`` in ``report``, escaped."""
    outcome = report.outcomes.get(node_id)
    spec = next((node for node in report.spec.nodes if node.id == node_id), None)
    if outcome is None or spec is None:
        return f"<div>No node '{html.escape(node_id)}' in this run.</div>"
    e = html.escape
    colour = STATUS_COLOURS.get(outcome.status, "#fff")
    duration = "" if outcome.duration_s is None else f" · {outcome.duration_s:.3f}s"
    parts = [
        f"<div><b>{e(node_id)}</b> · action <code>{e(outcome.action)}</code> · "
        f"<span style='background:{colour};padding:0 4px'>{e(outcome.status)}</span> · "
        f"attempts {outcome.attempts}{duration}</div>"
    ]
    rows = []
    for item in spec.inputs:
        source = item.source
        if source is None:
            origin, value = "literal", item.value
        else:
            origin = item.reference or ""
            value = report.cache.get(source[0], source[1], _MISSING)
        shown = "<i>not in the cache</i>" if value is _MISSING else preview_html(value)
        rows.append(f"<tr><td><code>{e(item.name)}</code></td><td>{e(origin)}</td><td>{shown}</td></tr>")
    if rows:
        parts.append("<b>Inputs</b><table class='dagger-inspect-inputs' style='font-size:12px'>"
                     f"{''.join(rows)}</table>")
    outputs = report.cache.namespace(node_id) if outcome.status == "succeeded" else {}
    if outputs:
        rows = [f"<tr><td><code>{e(key)}</code></td><td>{preview_html(value)}</td></tr>"
                for key, value in outputs.items()]
        parts.append("<b>Outputs</b><table class='dagger-inspect-outputs' style='font-size:12px'>"
                     f"{''.join(rows)}</table>")
    if outcome.error:
        parts.append(f"<div style='color:#b3261e'>{e(outcome.error)}</div>")
    pre = "<pre style='font-size:11px;white-space:pre-wrap'>"
    if outcome.traceback:
        parts.append(f"<b>Traceback</b>{pre}{e(outcome.traceback)}</pre>")
    if outcome.logs:
        parts.append(f"<b>Logs</b>{pre}{e(chr(10).join(outcome.logs))}</pre>")
    return "".join(parts)


class NodeInspector(widgets.VBox):
    """A dropdown of a run's nodes and a panel showing the chosen one (see :func:`node_html`)."""

    def __init__(self) -> None:
        self.choice = widgets.Dropdown(options=[_NONE], value=_NONE, description="inspect",
                                       layout=widgets.Layout(width="auto"))
        self.choice.add_class("dagger-inspect-choice")
        self.panel = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.panel.add_class("dagger-inspect")
        self._report: ExecutionReport | None = None
        self.choice.observe(lambda _change: self._show(), names="value")
        super().__init__(children=[self.choice, self.panel], layout=widgets.Layout(width="100%"))

    def sync(self, report: ExecutionReport) -> None:
        """Follow ``report``: new nodes join the dropdown; the chosen node is shown as it is now."""
        self._report = report
        if len(self.choice.options) - 1 != len(report.outcomes):
            self.choice.options = [_NONE, *report.outcomes]
        self._show()

    def select(self, node_id: str) -> None:
        """Show ``node_id`` (as choosing it in the dropdown does)."""
        self.choice.value = node_id

    def _show(self) -> None:
        if self._report is None or self.choice.value == _NONE:
            self.panel.value = ""
            return
        self.panel.value = node_html(self._report, str(self.choice.value))

    def widgets(self) -> list[widgets.Widget]:
        """Every widget of the inspector (to re-send or close them)."""
        return [self.choice, self.panel]
