"""What every dashboard shares: its panels, the throttled redraw, the graph policy, escaping.

A dashboard is a ``VBox`` of stock widgets: a header, a progress bar, a table,
an optional agent panel, the graph, an error panel and a Cancel button. Events
only mark it dirty; :meth:`Dashboard.draw` rebuilds the panels at most
``1 / interval`` times a second, and once more, at once, when the work ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ipywidgets as widgets

from dagger_nb.errors import DaggerError, GraphvizNotFound
from dagger_nb.graph import STATUS_COLOURS, render_svg
from dagger_nb.notebook._throttle import Throttle

escape = html.escape

#: Above this many nodes the graph is drawn only when the work ends (in a worker thread).
GRAPH_LIVE_LIMIT = 300
#: Seconds between two live renderings of the graph (Graphviz is slower than the other panels).
GRAPH_INTERVAL = 1.0


def badge(status: str) -> str:
    """``status`` as an escaped, coloured label."""
    colour = STATUS_COLOURS.get(status, "#eeeeee")
    return (
        f"<span class='dagger-status' style='background:{colour};padding:0 6px;border-radius:3px;"
        f"border:1px solid #bbb'>{escape(status)}</span>"
    )


def header_html(title: str, status: str, counts: dict[str, int], elapsed: float | None, extra: str = "") -> str:
    """Title, status, counts per status and elapsed time, escaped."""
    parts = " ".join(f"{badge(name)}&nbsp;{count}" for name, count in sorted(counts.items()))
    clock = "" if elapsed is None else f" · {elapsed:.1f}s"
    return (
        f"<div class='dagger-header-line'><b>{escape(title)}</b> {badge(status)}{clock}"
        f"{' · ' + escape(extra) if extra else ''}</div><div>{parts}</div>"
    )


def table_html(columns: Sequence[str], rows: Iterable[Sequence[object]], *, status_column: int, more: int) -> str:
    """An escaped HTML table; the ``status_column`` cell is coloured; ``more`` hidden rows are counted."""
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            text = "" if value is None else str(value)
            style = "padding:0 8px"
            if index == status_column:
                style += f";background:{STATUS_COLOURS.get(text, '#fff')}"
            cells.append(f"<td style='{style}'>{escape(_shorten(text))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    footer = f"<div style='color:#666'>… and {more} more</div>" if more > 0 else ""
    return (
        f"<table class='dagger-table-rows' style='border-collapse:collapse;font-size:12px'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{footer}"
    )


def errors_html(errors: Sequence[tuple[str, str]], *, limit: int = 20) -> str:
    """One escaped line per ``(subject, message)``; empty when there is none."""
    if not errors:
        return ""
    lines = "".join(
        f"<li><b>{escape(subject)}</b>: <span style='white-space:pre-wrap'>{escape(message)}</span></li>"
        for subject, message in errors[:limit]
    )
    more = f"<li>… and {len(errors) - limit} more</li>" if len(errors) > limit else ""
    return f"<div style='color:#b3261e'><b>Errors</b><ul style='margin:0'>{lines}{more}</ul></div>"


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def graph_html(dot: str) -> str:
    """The DOT rendered as inline SVG, or a note and the (escaped) DOT text when that fails."""
    try:
        svg = render_svg(dot)
    except GraphvizNotFound as error:
        return _dot_fallback(str(error), dot)
    except (DaggerError, OSError) as error:
        return _dot_fallback(f"Graphviz could not draw the graph: {error}", dot)
    return f"<div class='dagger-svg' style='overflow:auto;max-height:480px'>{_fit_width(svg)}</div>"


def _fit_width(svg: str) -> str:
    """Drop the XML prolog; a graph wider than the panel is scaled down to fit (never up)."""
    svg = svg[svg.find("<svg") :]
    return svg.replace("<svg", '<svg style="max-width:100%;height:auto"', 1)


def _dot_fallback(note: str, dot: str) -> str:
    return (
        f"<div class='dagger-graph-note' style='color:#8a5a00'>{escape(note)}</div>"
        f"<pre class='dagger-dot' style='max-height:300px;overflow:auto;font-size:11px'>{escape(dot)}</pre>"
    )


class GraphPanel:
    """Keeps an ``HTML`` widget showing the graph, re-rendered as the size allows.

    Up to ``live_limit`` nodes the graph is re-rendered at most every
    ``interval`` seconds while the work goes on; above, only once when it ends,
    in a worker thread so the run is never held up by Graphviz.
    """

    def __init__(
        self,
        *,
        live_limit: int = GRAPH_LIVE_LIMIT,
        interval: float = GRAPH_INTERVAL,
        layout: widgets.Layout | None = None,
    ) -> None:
        self.widget = widgets.HTML(layout=layout or widgets.Layout(width="100%"))
        self.widget.add_class("dagger-graph")
        self.live_limit = live_limit
        self.interval = interval
        self.renders = 0
        self._last = -float("inf")
        self._thread: threading.Thread | None = None

    def update(self, dot: Callable[[], str], nodes: int, *, final: bool) -> None:
        """Re-render if the policy allows it now (always when ``final`` for small graphs)."""
        if nodes > self.live_limit:
            if final:
                self._render_in_thread(dot)
            elif not self.widget.value:
                self.widget.value = (
                    f"<div class='dagger-graph-note'>The graph of {nodes} nodes is drawn when the work ends "
                    f"(live drawing stops above {self.live_limit} nodes).</div>"
                )
            return
        now = time.monotonic()
        if final or now - self._last >= self.interval:
            self._last = now
            self.renders += 1
            self.widget.value = graph_html(dot())

    def join(self, timeout: float | None = None) -> None:
        """Wait for a large graph being drawn in the background."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _render_in_thread(self, dot: Callable[[], str]) -> None:
        context = contextvars.copy_context()

        def render() -> None:
            value = graph_html(dot())
            self.renders += 1
            self.widget.value = value

        self._thread = threading.Thread(target=context.run, args=(render,), name="dagger-nb graph", daemon=True)
        self._thread.start()


class Dashboard(widgets.VBox):
    """Base of the live dashboards: panels, throttled redraw, final state, Cancel button.

    Subclasses implement :meth:`draw` (called at most ``1 / interval`` times a
    second, and once at the end) and :meth:`cancel`.
    """

    def __init__(
        self,
        *,
        interval: float = 0.25,
        graph_live_limit: int = GRAPH_LIVE_LIMIT,
        graph_interval: float = GRAPH_INTERVAL,
        table_rows: int = 20,
        agent_panel: bool = False,
        progress: bool = True,
        cancellable: bool = True,
    ) -> None:
        # One Layout for every full-width panel: a dashboard is cheap to create (see the benchmark).
        full_width = widgets.Layout(width="100%")
        self.header = widgets.HTML(layout=full_width)
        self.header.add_class("dagger-header")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=full_width)
        self.table = widgets.HTML(layout=full_width)
        self.table.add_class("dagger-table")
        self.agent_panel = widgets.HTML(layout=full_width) if agent_panel else None
        if self.agent_panel is not None:
            self.agent_panel.add_class("dagger-agents")
        self.graph = GraphPanel(live_limit=graph_live_limit, interval=graph_interval, layout=full_width)
        self.errors = widgets.HTML(layout=full_width)
        self.errors.add_class("dagger-errors")
        self.cancel_button = widgets.Button(description="Cancel", button_style="warning", icon="stop")
        self.cancel_button.add_class("dagger-cancel")
        self.cancel_button.on_click(lambda _button: self.cancel())
        self.table_rows = table_rows
        self.finished = False
        self.events_seen = 0
        #: The last exception raised while drawing (shown in the error panel), if any.
        self.draw_error: Exception | None = None
        self._throttle = Throttle(self._redraw, interval=interval)
        panels: list[Any] = [self.header, self.progress, self.table] if progress else [self.header, self.table]
        if self.agent_panel is not None:
            panels.append(self.agent_panel)
        panels += [self.graph.widget, self.errors]
        if cancellable:
            panels.append(self.cancel_button)
        super().__init__(children=panels, layout=widgets.Layout(border="1px solid #ddd", padding="4px"))
        self.add_class("dagger-dashboard")

    @property
    def redraws(self) -> int:
        """How many times the panels were redrawn."""
        return self._throttle.redraws

    def draw(self, *, final: bool) -> None:
        """Rebuild every panel from the current state."""
        raise NotImplementedError

    def cancel(self) -> None:
        """What the Cancel button does."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Redraw now."""
        self._throttle.dirty = True
        self._throttle.flush()

    def changed(self) -> None:
        """An event arrived: O(1), the redraw comes later (at most every ``interval`` seconds)."""
        self.events_seen += 1
        self._throttle.poke()

    def finish(self) -> None:
        """The work ended: draw the final state at once and disable Cancel."""
        self.finished = True
        self.cancel_button.disabled = True
        self.cancel_button.layout.display = "none"
        self._throttle.dirty = True
        self._throttle.flush()

    def send_final_state(self) -> None:
        """Re-send every panel's state from the calling cell (headless runners record it there)."""
        for widget in self._widgets():
            widget.send_state()
        self.send_state()

    def close(self) -> None:
        """Stop redrawing and close the widgets."""
        self._throttle.cancel()
        for child in self._widgets():
            child.close()
        super().close()

    def _widgets(self) -> list[widgets.Widget]:
        panels = [self.header, self.progress, self.table, self.agent_panel, self.graph.widget, self.errors]
        return [panel for panel in panels if panel is not None] + [self.cancel_button]

    def _redraw(self) -> None:
        # Called from the run's event listener: a drawing bug must never break the run it shows.
        try:
            with self.hold_sync():
                self.draw(final=self.finished)
        except Exception as error:
            self.draw_error = error
            with contextlib.suppress(Exception):
                self.errors.value = errors_html([("dashboard", f"could not draw: {type(error).__name__}: {error}")])
