"""DOT pictures of a workflow: its structure, or a run with each node's status."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dagger_nb.dag.spec import WorkflowSpec
from dagger_nb.graph import STATUS_COLOURS, Digraph

if TYPE_CHECKING:
    from dagger_nb.dag.report import NodeOutcome

#: Characters per line of a description or error inside a node box, and how many lines it may take:
#: Graphviz sizes a box to its longest line, so unwrapped text makes pictures thousands of pixels wide.
WRAP_WIDTH = 36
WRAP_LINES = 4
#: The title above the graph is wider (it spans the picture) but as bounded.
TITLE_WIDTH = 80


def workflow_dot(spec: WorkflowSpec, outcomes: Mapping[str, NodeOutcome] | None = None) -> str:
    """DOT of ``spec`` with its name (and description) as title; with ``outcomes``, each node
    shows and is coloured by its status. Descriptions and errors are wrapped to short lines.

    >>> from dagger_nb.dag.spec import NodeSpec
    >>> print(workflow_dot(WorkflowSpec(name="w", nodes=[NodeSpec(id="a", action="load")])), end="")
    digraph "w" {
      rankdir=LR;
      node [shape=box, style="rounded,filled", fontname="Helvetica", fillcolor="white"];
      graph [label="w", labelloc="t", fontname="Helvetica"];
      "a" [label="a\\naction: load", tooltip="a"];
    }
    """
    graph = Digraph(spec.name)
    title = [spec.name]
    if spec.description:
        title += wrap(spec.description, width=TITLE_WIDTH, lines=2)
    graph.graph_attributes(label="\n".join(title), labelloc="t", fontname="Helvetica")
    for node in spec.nodes:
        lines = [node.id, f"action: {node.action}"]
        attrs: dict[str, object] = {}
        outcome = outcomes.get(node.id) if outcomes is not None else None
        if outcome is not None:
            lines.append(f"{outcome.status} · attempts {outcome.attempts}")
            if outcome.duration_s is not None:
                lines.append(f"{outcome.duration_s:.3f}s")
            if outcome.error:
                lines += wrap(outcome.error)
            attrs["fillcolor"] = STATUS_COLOURS.get(outcome.status, "white")
        elif node.description:
            lines += wrap(node.description)
        graph.node(node.id, label="\n".join(lines), tooltip=node.description or node.id, **attrs)
    for node_id, dependencies in spec.dependency_map().items():
        for dependency in dependencies:
            graph.edge(dependency, node_id)
    return graph.source()


def wrap(text: str, *, width: int = WRAP_WIDTH, lines: int = WRAP_LINES) -> list[str]:
    """``text`` as at most ``lines`` lines of at most ``width`` characters, "…" where it was cut.

    >>> wrap("one two three four five six", width=9, lines=2)
    ['one two', 'three…']
    """
    wrapped = textwrap.wrap(" ".join(text.split()), width=width, break_long_words=True, break_on_hyphens=False)
    if len(wrapped) <= lines:
        return wrapped
    kept = wrapped[:lines]
    kept[-1] = kept[-1][: width - 1].rstrip() + "…"
    return kept
