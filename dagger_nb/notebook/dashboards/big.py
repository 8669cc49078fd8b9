"""Big runs: the graph as one box per action, and one progress bar per action.

Above :data:`COLLAPSE_LIMIT` nodes a graph of every node is a mosaic of
unreadable boxes; one box per action, its nodes counted per status and filled
in proportion, stays readable at any size. A failed node is never hidden: its
id is listed in its action's box (the first few) and in the error panel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from dagger_nb.export import SEGMENTS, escape, progress_of, segmented_bar_html
from dagger_nb.graph import STATUS_COLOURS, Digraph

if TYPE_CHECKING:
    from dagger_nb.dag.report import NodeOutcome
    from dagger_nb.dag.spec import WorkflowSpec

#: Above this many nodes the run's graph collapses into one box per action.
COLLAPSE_LIMIT = 60
_FILL_ORDER = (*SEGMENTS, "pending")
_FAILED_NAMED = 3


def counts_per_action(outcomes: Mapping[str, NodeOutcome]) -> dict[str, dict[str, int]]:
    """action -> status -> how many of its nodes are in it, in the order actions first appear."""
    per: dict[str, dict[str, int]] = {}
    for outcome in list(outcomes.values()):
        counts = per.setdefault(outcome.action, {})
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return per


def action_edges(spec: WorkflowSpec) -> list[tuple[str, str]]:
    """The edges between actions: (action of a dependency, action of its dependent), each once."""
    actions = {node.id: node.action for node in spec.nodes}
    edges: set[tuple[str, str]] = set()
    for node_id, dependencies in spec.dependency_map().items():
        for dependency in dependencies:
            pair = (actions.get(dependency, dependency), actions.get(node_id, node_id))
            if pair[0] != pair[1]:
                edges.add(pair)
    return sorted(edges)


def collapsed_dot(spec: WorkflowSpec, outcomes: Mapping[str, NodeOutcome], *,
                  edges: list[tuple[str, str]]) -> str:
    """DOT with one box per action, striped by the share of its nodes in each status; ``edges`` as
    :func:`action_edges` gives them."""
    per = counts_per_action(outcomes)
    failed: dict[str, list[str]] = {}
    for outcome in list(outcomes.values()):
        if outcome.status == "failed":
            failed.setdefault(outcome.action, []).append(outcome.node)
    graph = Digraph(spec.name)
    for action, counts in per.items():
        total = sum(counts.values())
        parts = [f"{counts[s]} {s}" for s in _FILL_ORDER if counts.get(s)]
        lines = [f"{action} ({total} nodes)", " · ".join(parts)]
        names = failed.get(action, [])
        if names:
            more = f" and {len(names) - _FAILED_NAMED} more" if len(names) > _FAILED_NAMED else ""
            lines.append("failed: " + ", ".join(names[:_FAILED_NAMED]) + more)
        stripes = ":".join(
            f"{STATUS_COLOURS[s]};{counts[s] / total:.3f}" for s in _FILL_ORDER if counts.get(s)
        )
        graph.node(f"action:{action}", label="\n".join(lines), tooltip=action, style="striped",
                   fillcolor=stripes, penwidth=2 if names else 1, color="#b3261e" if names else "black")
    for tail, head in edges:
        graph.edge(f"action:{tail}", f"action:{head}")
    return graph.source()


def action_progress_html(outcomes: Mapping[str, NodeOutcome]) -> str:
    """One segmented bar per action (like Dask's progress per key prefix), escaped."""
    rows = []
    for action, counts in counts_per_action(outcomes).items():
        total = sum(counts.values())
        running = counts.get("running", 0) + counts.get("pending", 0) > 0
        bar = segmented_bar_html(progress_of(counts, total, elapsed=None, running=running), height=10)
        rows.append(
            f"<tr><td style='padding:0 8px;white-space:nowrap'>{escape(action)}</td>"
            f"<td style='width:100%'>{bar}</td></tr>"
        )
    return (
        "<table class='dagger-action-progress' style='width:100%;font-size:12px'>"
        f"{''.join(rows)}</table>"
    )
