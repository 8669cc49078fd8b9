"""Growing a running workflow: turning ``add_node`` arguments into checked node specs.

Nodes may be added by actions (``ctx.add_node``) and by hooks
(``run.add_node``). A batch is checked as a whole and added all or none: every
action registered, ids unique, dependencies and references known, and no
cycle. New nodes can only depend on existing nodes or on each other, so a
cycle can only close inside the batch.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from dagger_nb.dag.spec import InputSpec, NodeSpec, OutputSpec
from dagger_nb.dag.validation import REFERENCE_PATTERN, find_cycles, reference_hint
from dagger_nb.errors import GraphChangeError

SUPERVISOR_ACTION = "supervisor_step"


def node_request(
    action: str,
    *,
    id: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    dependencies: Iterable[str] = (),
    outputs: Iterable[str] = (),
    timeout: float | None = None,
    try_count: int | None = None,
) -> dict[str, Any]:
    """The arguments of ``add_node`` as one mapping (what ``add_nodes`` takes a list of)."""
    return {"action": action, "id": id, "inputs": inputs, "dependencies": dependencies,
            "outputs": outputs, "timeout": timeout, "try_count": try_count}


def build_nodes(
    requests: list[Mapping[str, Any]],
    *,
    existing: Mapping[str, NodeSpec],
    actions: Collection[str],
    counters: dict[str, int],
    supervisor_steps: int,
) -> list[NodeSpec]:
    """Checked :class:`NodeSpec` objects for ``requests``; :class:`GraphChangeError` if any is wrong.

    ``counters`` (action -> last generated number) is only updated when the whole batch is valid.
    """
    taken = set(existing)
    numbers = dict(counters)
    nodes: list[NodeSpec] = []
    problems: list[str] = []
    for request in requests:
        unknown = set(request) - set(node_request("x"))
        if unknown:
            problems.append(f"unknown argument(s) {', '.join(sorted(unknown))} for add_node")
            continue
        action = request.get("action")
        if not isinstance(action, str) or action not in actions:
            problems.append(f"unknown action {action!r} (registered: {', '.join(sorted(actions)) or 'none'})")
            continue
        node_id = request.get("id")
        if node_id is None:
            number = numbers.get(action, 0)
            while True:
                number += 1
                node_id = f"{action}_{number}"
                if node_id not in taken:
                    break
            numbers[action] = number
        elif node_id in taken:
            problems.append(f"duplicate node id '{node_id}'")
            continue
        taken.add(node_id)
        inputs = dict(request.get("inputs") or {})
        if action == SUPERVISOR_ACTION and "iteration" not in inputs:
            inputs["iteration"] = {"value": supervisor_steps}
            supervisor_steps += 1
        try:
            nodes.append(NodeSpec(
                id=node_id,
                action=action,
                dependencies=list(request.get("dependencies") or ()),
                inputs=[_input(name, source) for name, source in inputs.items()],
                outputs=[OutputSpec(name=name) for name in request.get("outputs") or ()],
                timeout=request.get("timeout"),
                try_count=request.get("try_count"),
            ))
        except (ValidationError, GraphChangeError) as error:
            problems.append(f"node '{node_id}': {_first_line(error)}")
    if not problems:
        problems = list(_check_links(nodes, existing))
    if problems:
        raise GraphChangeError("cannot add nodes: " + "; ".join(problems))
    counters.update(numbers)
    return nodes


def _input(name: str, source: Any) -> InputSpec:
    if isinstance(source, str):
        return InputSpec(name=name, reference=source)
    if isinstance(source, Mapping) and set(source) == {"value"}:
        return InputSpec(name=name, value=source["value"])
    raise GraphChangeError(
        f"input '{name}' must be a reference ('inputs.KEY' or 'NODE.OUTPUT') or {{'value': ...}}, got {source!r}"
    )


def _check_links(nodes: list[NodeSpec], existing: Mapping[str, NodeSpec]) -> Iterable[str]:
    batch = {node.id: node for node in nodes}
    known = {**existing, **batch}
    graph: dict[str, list[str]] = {}
    for node in nodes:
        needs = list(node.dependencies)
        for dependency in node.dependencies:
            if dependency not in known:
                yield f"node '{node.id}': unknown dependency '{dependency}'"
        for item in node.inputs:
            if item.reference is None:
                continue
            if not REFERENCE_PATTERN.match(item.reference):
                yield (f"node '{node.id}': input '{item.name}' has a malformed reference '{item.reference}'"
                       f"{reference_hint(item.reference, known)}")
                continue
            source = item.source
            assert source is not None
            if source[0] == "inputs":
                continue
            if source[0] not in known:
                yield (f"node '{node.id}': input '{item.name}' references unknown node '{source[0]}'"
                       f"{reference_hint(item.reference, known)}")
                continue
            declared = {output.name for output in known[source[0]].outputs}
            if declared and source[1] not in declared:
                yield (f"node '{node.id}': input '{item.name}' references output '{source[1]}' that node "
                       f"'{source[0]}' does not declare")
            needs.append(source[0])
        graph[node.id] = [need for need in dict.fromkeys(needs) if need in batch]
    for cycle in find_cycles(graph):
        yield f"dependency cycle: {' -> '.join(cycle)}"


def _first_line(error: Exception) -> str:
    if isinstance(error, ValidationError):
        detail = error.errors()[0]
        where = ".".join(str(part) for part in detail["loc"])
        return f"{where}: {detail['msg']}" if where else detail["msg"]
    return str(error)


def supervisor_iteration(node: NodeSpec) -> int:
    """Which step of its supervisor loop ``node`` (a supervisor node) is: its literal ``iteration`` input."""
    for item in node.inputs:
        if item.name == "iteration" and item.reference is None and isinstance(item.value, int):
            return item.value
    return 0
