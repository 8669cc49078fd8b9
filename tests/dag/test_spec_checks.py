"""The static checks find the same problems whatever order the nodes are written in."""

from __future__ import annotations

import graphlib
import random

import pytest

from dagger_nb.dag.spec import InputSpec, NodeSpec, WorkflowSpec, node_dependencies
from dagger_nb.dag.validation import check_workflow


def _random_workflow(rng: random.Random, size: int) -> WorkflowSpec:
    """Nodes in a shuffled order, each needing a few others by dependency or by reference."""
    ids = [f"n{i}" for i in range(size)]
    nodes = []
    for node_id in ids:
        needs = rng.sample(ids, rng.randint(0, min(3, size)))
        by_reference = [need for need in needs if rng.random() < 0.5]
        nodes.append(
            NodeSpec(
                id=node_id,
                action="x",
                dependencies=[need for need in needs if need not in by_reference],
                inputs=[InputSpec(name=f"i{k}", reference=f"{need}.out") for k, need in enumerate(by_reference)],
            )
        )
    rng.shuffle(nodes)
    return WorkflowSpec(name="w", nodes=nodes)


def _has_cycle(spec: WorkflowSpec) -> bool:
    try:
        graphlib.TopologicalSorter({node.id: node_dependencies(node) for node in spec.nodes}).prepare()
    except graphlib.CycleError:
        return True
    return False


@pytest.mark.parametrize("seed", range(300))
def test_a_cycle_is_reported_exactly_when_there_is_one(seed: int) -> None:
    spec = _random_workflow(random.Random(seed), size=random.Random(seed).randint(1, 8))
    messages = [message for message, _, _ in check_workflow(spec, actions=["x"])]
    assert all(message.startswith("dependency cycle: ") for message in messages), messages
    assert bool(messages) == _has_cycle(spec), [node_dependencies(node) for node in spec.nodes]


def test_nodes_written_before_what_they_need_are_fine_and_a_loop_among_them_is_found() -> None:
    chain = [NodeSpec(id=f"n{i}", action="x", dependencies=[f"n{i + 1}"] if i < 99 else []) for i in range(100)]
    assert list(check_workflow(WorkflowSpec(name="w", nodes=chain), actions=["x"])) == []
    # The last node reads the first one: every edge but this one points forward in the file.
    looped = [*chain[:-1], NodeSpec(id="n99", action="x", inputs=[InputSpec(name="i", reference="n0.out")])]
    findings = list(check_workflow(WorkflowSpec(name="w", nodes=looped), actions=["x"]))
    cycle = " -> ".join(f"n{i}" for i in [*range(100), 0])
    assert findings == [(f"dependency cycle: {cycle}", 0, ("dependencies",))]


def test_a_self_reference_and_a_duplicate_id_keep_their_findings() -> None:
    spec = WorkflowSpec(
        name="w",
        nodes=[
            NodeSpec(id="a", action="x", inputs=[InputSpec(name="i", reference="a.out")]),
            NodeSpec(id="b", action="x", dependencies=["a"]),
            NodeSpec(id="a", action="x", dependencies=["b"]),  # a duplicate: its edges are not the first a's
        ],
    )
    assert list(check_workflow(spec, actions=["x"])) == [
        ("duplicate node id 'a' (first defined as node 1)", 2, ("id",)),
        ("dependency cycle: a -> a", 0, ("dependencies",)),
    ]
