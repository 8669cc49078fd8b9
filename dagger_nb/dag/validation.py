"""Static checks on a structurally valid workflow: ids, references, cycles, actions.

:func:`check_workflow` yields ``(message, node_index, key)`` so the loader can
attach the line of the offending key; :func:`find_cycles` is also used when
nodes are added to a running workflow.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from dagger_nb.dag.spec import WorkflowSpec

REFERENCE_PATTERN = re.compile(r"^[^\s.]+(\.\S+)?$")

Finding = tuple[str, int | None, tuple[Any, ...]]


def check_workflow(spec: WorkflowSpec, *, actions: Collection[str] | None = None) -> Iterator[Finding]:
    """Yield every semantic problem of ``spec`` as ``(message, node_index, key_path)``."""
    first_index: dict[str, int] = {}
    for index, node in enumerate(spec.nodes):
        if node.id in first_index:
            yield (f"duplicate node id '{node.id}' (first defined as node {first_index[node.id] + 1})",
                   index, ("id",))
        else:
            first_index[node.id] = index
    known = ", ".join(first_index) or "none"
    outputs = {node.id: {output.name for output in node.outputs} for node in spec.nodes}
    graph: dict[str, list[str]] = {node_id: [] for node_id in first_index}
    for index, node in enumerate(spec.nodes):
        edges = graph[node.id] if first_index[node.id] == index else []
        for position, dependency in enumerate(node.dependencies):
            if dependency not in first_index:
                yield (f"dependency '{dependency}' is not a node (known: {known})",
                       index, ("dependencies", position))
            else:
                edges.append(dependency)
        for position, spec_input in enumerate(node.inputs):
            yield from _check_reference(spec_input.name, spec_input.reference, index=index,
                                        key=("inputs", position, "reference"),
                                        known=known, outputs=outputs, edges=edges)
        if actions is not None and node.action not in actions:
            registered = ", ".join(sorted(actions)) or "none"
            yield (f"unknown action '{node.action}' (registered: {registered})", index, ("action",))
    for cycle in find_cycles({node_id: list(dict.fromkeys(deps)) for node_id, deps in graph.items()}):
        yield (f"dependency cycle: {' -> '.join(cycle)}", first_index[cycle[0]], ("dependencies",))


def _check_reference(
    name: str,
    reference: str | None,
    *,
    index: int,
    key: tuple[Any, ...],
    known: str,
    outputs: Mapping[str, set[str]],
    edges: list[str],
) -> Iterator[Finding]:
    if reference is None:
        return
    if not REFERENCE_PATTERN.match(reference):
        yield (f"input '{name}' has a malformed reference '{reference}' "
               f"(expected 'inputs.KEY' or 'NODE.OUTPUT'){reference_hint(reference, outputs)}", index, key)
        return
    node_id, dot, output = reference.partition(".")
    if not dot or node_id == "inputs":
        return
    if node_id not in outputs:
        yield (f"input '{name}' references unknown node '{node_id}' (known: {known})"
               f"{reference_hint(reference, outputs)}", index, key)
        return
    declared = outputs[node_id]
    if declared and output not in declared:
        yield (f"input '{name}' references output '{output}' that node '{node_id}' does not declare "
               f"(declared: {', '.join(sorted(declared))})", index, key)
    if node_id not in edges:
        edges.append(node_id)


def reference_hint(reference: str, node_ids: Collection[str]) -> str:
    """A hint when ``reference`` was meant for a node whose id a reference cannot name.

    Dependencies name a node by its whole id, but a reference splits at the first
    '.' and allows no whitespace, so such a node is valid yet out of its reach.
    """
    for node_id in node_ids:
        if reference.startswith(f"{node_id}.") and ("." in node_id or any(c.isspace() for c in node_id)):
            what = "'.'" if "." in node_id else "whitespace"
            return f"; node '{node_id}' cannot be referenced because its id contains {what}: rename it"
    return ""


def find_cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every elementary cycle found by one depth-first pass, each as ``[a, b, ..., a]``.

    ``graph`` maps a node to the nodes it depends on; a cycle is listed in
    dependency order, so ``a -> b -> a`` means ``a`` needs ``b`` and ``b`` needs ``a``.

    >>> find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": []})
    [['a', 'b', 'c', 'a']]
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    cycles: list[list[str]] = []
    for start in graph:
        if start in state:
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(graph.get(start, ())))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                cycles.append([*path[path.index(child):], child])
            elif child not in state and child in graph:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(graph[child])))
    return cycles
