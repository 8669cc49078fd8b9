"""What every dashboard shares: its panels, the throttled redraw, the clock, the graph policy, escaping.

A dashboard is a ``VBox`` of stock widgets: a header, a segmented progress bar,
a table, an optional agent panel, the graph, a timeline, an error panel and a
Cancel button. Events only mark it dirty; :meth:`Dashboard.draw` rebuilds the
panels at most ``1 / interval`` times a second (a trailing redraw follows the
last event of a burst), at least every ``tick`` seconds while the work runs (so
the clock moves when nothing happens), and once more, at once, when it ends.
The graph is rendered by Graphviz in a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import html
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ipywidgets as widgets

from dagger_nb.errors import DaggerError, GraphvizNotFound, describe_error
from dagger_nb.export import errors_list_html
from dagger_nb.graph import STATUS_COLOURS, render_svg
from dagger_nb.notebook.dashboards._throttle import Throttle

escape = html.escape

#: Above this many nodes the graph is redrawn only every ``GRAPH_SLOW_INTERVAL`` seconds (and at the end).
GRAPH_LIVE_LIMIT = 300
#: Seconds between two live renderings of the graph (Graphviz is slower than the other panels).
GRAPH_INTERVAL = 0.5
#: Seconds between two renderings of a graph above ``GRAPH_LIVE_LIMIT`` nodes.
GRAPH_SLOW_INTERVAL = 5.0
#: Seconds between two redraws while the work runs and no event comes (the clock's tick).
TICK = 0.5


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


def usage_text(tokens: int, cost: float | None, budget: int | None) -> str:
    """``"440 tokens of 1,000 · $0.0009"`` when usage was reported or a budget is set; else ``""``
    (plain text: the header escapes it)."""
    if not tokens and cost is None and budget is None:
        return ""
    text = f"{tokens:,} tokens" + (f" of {budget:,}" if budget is not None else "")
    return text + (f" · {money(cost)}" if cost is not None else "")


def money(cost: float) -> str:
    """A reported cost, with enough digits for the fractions of a cent one LLM call costs."""
    return f"${cost:,.2f}" if cost >= 1 else f"${cost:.4g}"


def usage_cell(tokens: int, cost: float | None, models: Sequence[str]) -> str:
    """A table cell: ``"440 · $0.0009 · model"`` (the parts reported), empty when nothing was."""
    parts = [f"{tokens:,}"] if tokens or cost is not None or models else []
    if cost is not None:
        parts.append(money(cost))
    if models:
        parts.append(", ".join(models))
    return " · ".join(parts)


def table_html(columns: Sequence[str], rows: Iterable[Sequence[object]], *, status_column: int, more: int,
               nowrap: Sequence[int] = (0,)) -> str:
    """An escaped HTML table; the ``status_column`` cell is coloured; ``more`` hidden rows are counted;
    the ``nowrap`` columns (ids) never wrap."""
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            text = "" if value is None else str(value)
            style = "padding:0 8px;white-space:nowrap" if index in nowrap else "padding:0 8px"
            if index == status_column:
                style += f";background:{STATUS_COLOURS.get(text, '#fff')}"
            cells.append(f"<td style='{style}'>{escape(_shorten(text))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    footer = f"<div style='color:#666'>… and {more} more</div>" if more > 0 else ""
    return (
        f"<table class='dagger-table-rows' style='border-collapse:collapse;font-size:12px'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{footer}"
    )


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: The zoom choices of the graph: ``fit`` scales a big graph down to the panel (never up); a
#: percentage draws it at that share of its natural size in a panel that scrolls (pans) both ways.
ZOOM_CHOICES: tuple[tuple[str, float], ...] = (("fit", 0.0), ("50%", 0.5), ("100%", 1.0), ("150%", 1.5),
                                               ("200%", 2.0), ("300%", 3.0))
_GRAPH_HEIGHT = 560
_SVG_SIZE = re.compile(r'<svg\b[^>]*?\swidth="([\d.]+)(pt|px)?"[^>]*?\sheight="([\d.]+)(pt|px)?"')


def render_graph(dot: str) -> str:
    """The DOT as an ``<svg>`` element (no XML prolog), or a note and the escaped DOT when that fails."""
    try:
        svg = render_svg(dot)
    except GraphvizNotFound as error:
        return _dot_fallback(str(error), dot)
    except (DaggerError, OSError) as error:
        return _dot_fallback(f"Graphviz could not draw the graph: {error}", dot)
    return svg[svg.find("<svg") :]


def zoomed_html(svg: str, zoom: float) -> str:
    """``svg`` (from :func:`render_graph`) in a panel that scrolls both ways: fitted to the panel's width
    and height when ``zoom`` is 0 (so no node of a wide fan-out hides), else ``zoom`` times its size."""
    if not svg.startswith("<svg"):
        return svg  # the note of a failed render
    size = _SVG_SIZE.match(svg)
    if zoom <= 0 or size is None:
        style = f"max-width:100%;max-height:{_GRAPH_HEIGHT}px;height:auto"
    else:
        unit = size.group(2) or "px"
        width, height = float(size.group(1)) * zoom, float(size.group(3)) * zoom
        style = f"width:{width:.1f}{unit};height:{height:.1f}{unit};max-width:none;max-height:none"
    styled = svg.replace("<svg", f'<svg style="{style}"', 1)
    return (
        f"<div class='dagger-svg' data-zoom='{zoom:g}' style='overflow:auto;max-height:{_GRAPH_HEIGHT + 20}px'>"
        f"{styled}</div>"
    )


def _dot_fallback(note: str, dot: str) -> str:
    return (
        f"<div class='dagger-graph-note' style='color:#8a5a00'>{escape(note)}</div>"
        f"<pre class='dagger-dot' style='max-height:300px;overflow:auto;font-size:11px'>{escape(dot)}</pre>"
    )


class GraphPanel:
    """Keeps an ``HTML`` widget showing the graph, rendered by Graphviz in a worker thread.

    :meth:`update` is called at every redraw with the DOT source (a function,
    evaluated on the caller's thread so it reads a consistent state) and a
    ``version`` that changes when the state does. A render starts at once when
    the last one started at least ``interval`` seconds ago (``slow_interval``
    above ``live_limit`` nodes, and never sooner than four times the last
    render's duration); otherwise a timer on the loop starts it when allowed,
    so the graph catches up with the last event even when no other event
    comes. The first render waits ``interval`` too (a run shorter than that
    is drawn once). ``final`` renders at once; an older render finishing later
    never overwrites a newer one. ``zoom`` (buttons above the graph) scales
    the picture shown without rendering it again; it holds across redraws.
    """

    def __init__(
        self,
        *,
        live_limit: int = GRAPH_LIVE_LIMIT,
        interval: float = GRAPH_INTERVAL,
        slow_interval: float = GRAPH_SLOW_INTERVAL,
        layout: widgets.Layout | None = None,
    ) -> None:
        self.widget = widgets.HTML(layout=layout or widgets.Layout(width="100%"))
        self.widget.add_class("dagger-graph")
        #: Fit the graph to the panel, or show it at a share of its size (the panel then scrolls).
        self.zoom = widgets.ToggleButtons(options=ZOOM_CHOICES, value=0.0, tooltips=["fit the panel"],
                                          style={"button_width": "68px"})  # room for "300%" with the theme's padding
        self.zoom.add_class("dagger-zoom")
        self.zoom.observe(self._zoomed, names="value")
        self._svg = ""  # the latest render shown, unzoomed
        self.live_limit = live_limit
        self.interval = interval
        self.slow_interval = slow_interval
        #: renders shown so far
        self.renders = 0
        #: the version of the state the shown graph was rendered from
        self.shown_version: object = None
        self._lock = threading.Lock()
        self._started = 0  # sequence number of the latest render started
        self._applied = 0  # sequence number of the render shown
        self._version: object = None  # version of the latest render started
        self._last_start = -float("inf")
        self._created = time.monotonic()
        self._last_duration = 0.0
        self._threads: list[threading.Thread] = []
        self._timer: asyncio.TimerHandle | None = None
        self._pending: tuple[Callable[[], str], object, int] | None = None
        self._resend: contextvars.Context | None = None

    @property
    def busy(self) -> bool:
        """True while a render runs or waits for its turn."""
        return self._timer is not None or any(thread.is_alive() for thread in self._threads)

    def update(self, dot: Callable[[], str], nodes: int, *, final: bool, version: object = None) -> None:
        """Render the graph of ``version`` now or as soon as the policy allows (at once when ``final``)."""
        if not final and version is not None and version == self._version:
            return
        if self._started:
            interval = self.interval if nodes <= self.live_limit else self.slow_interval
            wait = self._last_start + max(interval, 4 * self._last_duration) - time.monotonic()
        else:  # the first picture waits one interval: a short run is drawn once, when it ends
            wait = self._created + self.interval - time.monotonic()
        if final or wait <= 0:
            self._cancel_timer()
            self._start(dot(), version)
            return
        self._pending = (dot, version, nodes)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to wait on: render now rather than never
                self._start(dot(), version)
                return
            self._timer = loop.call_later(wait, self._fire)

    def _fire(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            dot, version, nodes = pending
            self.update(dot, nodes, final=False, version=version)

    def _cancel_timer(self) -> None:
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def join(self, timeout: float | None = None) -> None:
        """Wait for the renders started so far (a test, or a cell about to re-send the final state)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))

    def close(self) -> None:
        """Start nothing more."""
        self._cancel_timer()

    def _zoomed(self, change: dict[str, Any]) -> None:
        with self._lock:
            if self._svg:
                self.widget.value = zoomed_html(self._svg, change["new"])

    def resend_from(self, context: contextvars.Context) -> None:
        """When a render still under way is shown, send the widget's state again from ``context``."""
        with self._lock:
            if self._applied < self._started:
                self._resend = context

    def _start(self, dot: str, version: object) -> None:
        self._started += 1
        sequence = self._started
        self._version = version
        self._last_start = time.monotonic()
        context = contextvars.copy_context()  # widget updates belong to the cell that showed the dashboard

        def render() -> None:
            began = time.monotonic()
            svg = render_graph(dot)
            self._last_duration = time.monotonic() - began
            with self._lock:
                if sequence > self._applied:
                    self._applied = sequence
                    self.renders += 1
                    self.shown_version = version
                    self._svg = svg
                    self.widget.value = zoomed_html(svg, self.zoom.value)
                    resend, self._resend = (self._resend, None) if sequence == self._started else (None, self._resend)
                    if resend is not None:
                        resend.run(self.widget.send_state)

        self._threads = [thread for thread in self._threads if thread.is_alive()]
        thread = threading.Thread(target=context.run, args=(render,), name="dagger-nb graph", daemon=True)
        self._threads.append(thread)
        thread.start()


class Dashboard(widgets.VBox):
    """Base of the live dashboards: panels, throttled redraw, clock tick, final state, Cancel button.

    Subclasses implement :meth:`draw` (called at most ``1 / interval`` times a
    second, at least every ``tick`` seconds while the work runs, and once at
    the end) and :meth:`cancel`.
    """

    def __init__(
        self,
        *,
        interval: float = 0.25,
        tick: float = TICK,
        graph_live_limit: int = GRAPH_LIVE_LIMIT,
        graph_interval: float = GRAPH_INTERVAL,
        table_rows: int = 20,
        agent_panel: bool = False,
        progress: bool = True,
        timeline: bool = False,
        cancellable: bool = True,
    ) -> None:
        # One Layout shared by every full-width panel keeps a dashboard cheap to create.
        full_width = widgets.Layout(width="100%")
        self.header = widgets.HTML(layout=full_width)
        self.header.add_class("dagger-header")
        self.progress = widgets.HTML(layout=full_width)
        self.progress.add_class("dagger-progress")
        self.table = widgets.HTML(layout=full_width)
        self.table.add_class("dagger-table")
        self.agent_panel = widgets.HTML(layout=full_width) if agent_panel else None
        if self.agent_panel is not None:
            self.agent_panel.add_class("dagger-agents")
        self.graph = GraphPanel(live_limit=graph_live_limit, interval=graph_interval, layout=full_width)
        self.legend = widgets.HTML(layout=full_width)
        self.legend.add_class("dagger-legend-panel")
        self.timeline = widgets.HTML(layout=full_width) if timeline else None
        if self.timeline is not None:
            self.timeline.add_class("dagger-timeline-panel")
        self.errors = widgets.HTML(layout=full_width)
        self.errors.add_class("dagger-errors")
        self.cancel_button = widgets.Button(description="Cancel", button_style="warning", icon="stop")
        self.cancel_button.add_class("dagger-cancel")
        self.cancel_button.on_click(lambda _button: self.cancel())
        self.table_rows = table_rows
        self.tick = tick
        self.finished = False
        self.closed = False
        self.events_seen = 0
        #: How many redraws the clock's tick asked for.
        self.ticks = 0
        #: The last exception raised while drawing (shown in the error panel), if any.
        self.draw_error: Exception | None = None
        self._throttle = Throttle(self._redraw, interval=interval)
        self._tick_timer: asyncio.TimerHandle | None = None
        self._fills: list[threading.Thread] = []
        panels: list[Any] = [self.header, self.progress, self.table] if progress else [self.header, self.table]
        if self.agent_panel is not None:
            panels.append(self.agent_panel)
        panels += [self.graph.zoom, self.graph.widget, self.legend]
        if self.timeline is not None:
            panels.append(self.timeline)
        panels.append(self.errors)
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
        if self._tick_timer is None:
            self.start_clock()

    def start_clock(self) -> None:
        """Redraw at least every ``tick`` seconds until the work ends (needs a running loop)."""
        if self._tick_timer is not None or self.finished or self.closed or self.tick <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop here: the first event (emitted on the work's loop) starts it
        self._tick_timer = loop.call_later(self.tick, self._on_tick)

    def _on_tick(self) -> None:
        self._tick_timer = None
        if self.finished or self.closed:
            return
        self.ticks += 1
        self._throttle.dirty = True
        self._throttle.poke()
        self.start_clock()

    def _stop_clock(self) -> None:
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None

    def finish(self) -> None:
        """The work ended: draw the final state at once and disable Cancel."""
        self.finished = True
        self._stop_clock()
        self.cancel_button.disabled = True
        self.cancel_button.layout.display = "none"
        self._throttle.dirty = True
        self._throttle.flush()

    def resume(self) -> None:
        """The work goes on again (a resumed run): show Cancel, tick the clock."""
        self.finished = False
        self.cancel_button.disabled = False
        self.cancel_button.layout.display = None
        self.start_clock()

    def fill_in_thread(self, widget: widgets.HTML, make: Callable[[], str]) -> None:
        """Set ``widget.value = make()`` from a worker thread (a costly panel of a finished run)."""
        context = contextvars.copy_context()

        def fill() -> None:
            widget.value = make()

        thread = threading.Thread(target=context.run, args=(fill,), name="dagger-nb panel", daemon=True)
        self._fills = [alive for alive in self._fills if alive.is_alive()] + [thread]
        thread.start()

    def settle(self, timeout: float | None = 30) -> None:
        """Wait for the graph and the panels being made in worker threads (tests, scripts)."""
        self.graph.join(timeout)
        for thread in list(self._fills):
            thread.join(timeout)

    def send_final_state(self) -> None:
        """Re-send every panel's state from the calling cell (headless runners record it there); a graph
        still being rendered is sent from this cell too when it is ready (the loop never waits for it)."""
        if self.closed:
            return
        self.graph.resend_from(contextvars.copy_context())
        for widget in self._widgets():
            widget.send_state()
        self.send_state()

    def close(self) -> None:
        """Stop redrawing and close the widgets."""
        self.closed = True
        self._stop_clock()
        self._throttle.cancel()
        self.graph.close()
        for child in self._widgets():
            child.close()
        super().close()

    def _widgets(self) -> list[widgets.Widget]:
        panels = [self.header, self.progress, self.table, self.agent_panel, self.graph.zoom, self.graph.widget,
                  self.legend, self.timeline, self.errors]
        return [panel for panel in panels if panel is not None] + [self.cancel_button]

    def _redraw(self) -> None:
        # Called from the run's event listener: a drawing bug must never break the run it shows.
        try:
            with self.hold_sync():
                self.draw(final=self.finished)
        except Exception as error:
            self.draw_error = error
            with contextlib.suppress(Exception):
                message = f"could not draw: {describe_error(error)}"
                self.errors.value = errors_list_html([("dashboard", message, None)])
