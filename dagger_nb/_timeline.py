"""The run timeline: spans of started nodes, laid out in worker-slot lanes, drawn as SVG or returned as a
pandas frame.

Separate from :mod:`dagger_nb.export` (which re-exports every name here) because lane layout and the Gantt
drawing are one concept with their own geometry, used by the live dashboards and the exported pages
alike; :func:`format_seconds` lives here because the timeline's axis needs it and the export module
builds on this one, not the reverse. pandas is imported only inside :func:`timeline_frame`.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from dagger_nb.graph import STATUS_COLOURS

if TYPE_CHECKING:
    import pandas as pd

    from dagger_nb.dag.report import ExecutionReport

#: Above this many spans, neighbouring spans of one lane and status closer than a pixel merge into one bar.
_MERGE_ABOVE = 200

def format_seconds(seconds: float) -> str:
    """``0.4s``, ``12.0s``, ``3m05s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(slots=True)
class Span:
    """One bar of a timeline: ``name`` ran from ``start`` to ``end`` (None: still running), on
    ``worker`` when a backend said where (a Dask worker's address)."""

    name: str
    group: str
    status: str
    start: float
    end: float | None
    worker: str | None = None


def lane_layout(spans: Sequence[Span]) -> tuple[list[int], list[str]]:
    """Each span's lane and each lane's label: worker slots here, or slots within each Dask worker."""
    if not any(span.worker for span in spans):
        lanes = assign_lanes(spans)
        return lanes, [f"slot {lane + 1}" for lane in range(max(lanes, default=-1) + 1)]
    by_worker: dict[str, list[int]] = {}
    for index, span in enumerate(spans):
        by_worker.setdefault(span.worker or "here", []).append(index)
    lanes = [0] * len(spans)
    labels: list[str] = []
    for worker, indexes in sorted(by_worker.items()):
        local = assign_lanes([spans[i] for i in indexes])
        for index, lane in zip(indexes, local, strict=True):
            lanes[index] = len(labels) + lane
        name = worker.rsplit("/", 1)[-1]
        labels += [f"{name} · {lane + 1}" for lane in range(max(local) + 1)]
    return lanes, labels


def assign_lanes(spans: Sequence[Span]) -> list[int]:
    """A lane per span so that spans in one lane never overlap (the worker slot each one used)."""
    order = sorted(range(len(spans)), key=lambda i: spans[i].start)
    free: list[tuple[float, int]] = []  # (free from, lane), earliest first
    lanes = [0] * len(spans)
    for index in order:
        span = spans[index]
        # the lane free the longest, or (every lane busy) one more: each lane is in ``free`` once
        lane = heapq.heappop(free)[1] if free and free[0][0] <= span.start else len(free)
        lanes[index] = lane
        heapq.heappush(free, (math.inf if span.end is None else span.end, lane))
    return lanes


def timeline_svg(spans: Sequence[Span], *, now: float | None = None, width: int = 900, lane_height: int = 16,
                 max_lanes: int = 40) -> str:
    """A Gantt chart of ``spans`` as inline SVG, one lane per worker slot; empty when nothing started.

    Above ``_MERGE_ABOVE`` spans, neighbouring spans of one lane and status closer than a pixel are
    drawn as one bar (its tooltip counts them), so a run of thousands of short nodes stays a light picture.
    """
    if not spans:
        return ""
    now = time.time() if now is None else now
    lanes, labels = lane_layout(spans)
    origin = min(span.start for span in spans)
    end = max([now if span.end is None else span.end for span in spans] + [origin + 1e-3])
    scale = (width - 60) / (end - origin)
    shown_lanes = min(max(lanes) + 1, max_lanes)
    height = shown_lanes * lane_height + 20
    merge = len(spans) > _MERGE_ABOVE
    per_lane: dict[int, list[Span]] = {}
    for span, lane in zip(spans, lanes, strict=True):
        if lane < max_lanes:
            per_lane.setdefault(lane, []).append(span)
    bars = []
    for lane, members in per_lane.items():
        members.sort(key=lambda span: span.start)
        block: list[Span] = []
        block_end = 0.0
        for member in [*members, None]:
            stop = 0.0 if member is None else (now if member.end is None else member.end)
            if merge and member is not None and block and member.status == block[0].status and (
                    member.start - block_end) * scale < 1.0:
                block.append(member)
                block_end = max(block_end, stop)
                continue
            if block:
                bars.append(_bar(block, lane, block_end, origin=origin, scale=scale, lane_height=lane_height))
            if member is not None:
                block, block_end = [member], stop
    axis = (
        f"<text x='50' y='{height - 4}' font-size='10'>0s</text>"
        f"<text x='{width - 10}' y='{height - 4}' font-size='10' text-anchor='end'>"
        f"{escape(format_seconds(end - origin))}</text>"
    )
    lane_labels = "".join(
        f"<text x='2' y='{lane * lane_height + lane_height - 4}' font-size='9' fill='#666'>"
        f"{escape(labels[lane][:14])}</text>"
        for lane in range(shown_lanes)
    )
    more = len(set(lanes)) - shown_lanes
    note = f"<div style='font-size:11px;color:#666'>… and {more} more lanes</div>" if more > 0 else ""
    return (
        f"<div class='dagger-timeline'><svg xmlns='http://www.w3.org/2000/svg' width='100%' "
        f"viewBox='0 0 {width} {height}' preserveAspectRatio='none' style='max-width:{width}px'>"
        f"{lane_labels}{''.join(bars)}{axis}</svg>{note}</div>"
    )


def _bar(block: list[Span], lane: int, block_end: float, *, origin: float, scale: float, lane_height: int) -> str:
    first = block[0]
    x = 50 + (first.start - origin) * scale
    bar_width = max((block_end - first.start) * scale, 1.5)
    if len(block) == 1:
        label = f"{first.name} ({first.group}): {first.status}"
        if first.end is not None:
            label += f", {first.end - first.start:.3f}s"
    else:
        label = f"{len(block)} nodes ({first.name} … {block[-1].name}): {first.status}"
    return (
        f"<rect class='dagger-span' x='{x:.1f}' y='{lane * lane_height + 2}' width='{bar_width:.1f}' "
        f"height='{lane_height - 4}' fill='{STATUS_COLOURS.get(first.status, '#ddd')}' stroke='#666' "
        f"stroke-width='0.5'><title>{escape(label)}</title></rect>"
    )


def run_spans(report: ExecutionReport) -> list[Span]:
    """The started nodes of a run as timeline spans."""
    spans = []
    for outcome in list(report.outcomes.values()):
        if outcome.started_at is not None:
            spans.append(Span(outcome.node, outcome.action, outcome.status, outcome.started_at,
                              outcome.finished_at if outcome.status != "running" else None, outcome.worker))
    return spans


def timeline_frame(report: ExecutionReport) -> pd.DataFrame:
    """One row per started node: ``node, action, status, worker, lane, start, finish, duration_s`` (times
    UTC; ``worker`` None for nodes run here; ``lane`` the slot it ran in, within its worker)."""
    import pandas as pd

    spans = run_spans(report)
    lanes, labels = lane_layout(spans)
    frame = pd.DataFrame(
        [(s.name, s.group, s.status, s.worker, labels[lane], s.start, s.end,
          None if s.end is None else s.end - s.start)
         for s, lane in zip(spans, lanes, strict=True)],
        columns=["node", "action", "status", "worker", "lane", "start", "finish", "duration_s"],
    )
    for column in ("start", "finish"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame.sort_values("start", kind="stable").reset_index(drop=True)
