"""DOT pictures of a workflow: its structure, or a run with each node's status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from dagger_nb.dag.spec import WorkflowSpec
from dagger_nb.graph import STATUS_COLOURS, Digraph

if TYPE_CHECKING:
    from dagger_nb.dag.report import NodeOutcome


def workflow_dot(spec: WorkflowSpec, outcomes: Mapping[str, NodeOutcome] | None = None) -> str:
    """DOT of ``spec``; with ``outcomes``, each node shows and is coloured by its status.

    >>> from dagger_nb.dag.spec import NodeSpec
    >>> print(workflow_dot(WorkflowSpec(name="w", nodes=[NodeSpec(id="a", action="load")])), end="")
    digraph "w" {
      rankdir=LR;
      node [shape=box, style="rounded,filled", fontname="Helvetica", fillcolor="white"];
      "a" [label="a\\naction: load", tooltip="a"];
    }
    """
    graph = Digraph(spec.name)
    for node in spec.nodes:
        lines = [node.id, f"action: {node.action}"]
        attrs: dict[str, object] = {}
        outcome = outcomes.get(node.id) if outcomes is not None else None
        if outcome is not None:
            lines.append(f"{outcome.status} · attempts {outcome.attempts}")
            if outcome.duration_s is not None:
                lines.append(f"{outcome.duration_s:.3f}s")
            if outcome.error:
                lines.append(_shorten(outcome.error))
            attrs["fillcolor"] = STATUS_COLOURS.get(outcome.status, "white")
        elif node.description:
            lines.append(_shorten(node.description))
        graph.node(node.id, label="\n".join(lines), tooltip=node.description or node.id, **attrs)
    for node_id, dependencies in spec.dependency_map().items():
        for dependency in dependencies:
            graph.edge(dependency, node_id)
    return graph.source()


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
