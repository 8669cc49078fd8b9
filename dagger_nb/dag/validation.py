"""Static checks on a structurally valid workflow: ids, references, cycles, actions.

:func:`check_workflow` yields ``(message, node_index, key)`` so the loader can
attach the line of the offending key; :func:`find_cycles` is also used when
nodes are added to a running workflow. Every check is one pass over the nodes
with dict and set look-ups, so a workflow with N nodes and E edges costs O(N + E).
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dagger_nb._gc import collector_paused
from dagger_nb.dag.spec import InputSpec, NodeSpec, WorkflowSpec, brief_list, split_reference

REFERENCE_PATTERN = re.compile(r"^[^\s.]+(\.\S+)?$")

Finding = tuple[str, int | None, tuple[Any, ...]]

#: "did you mean" is worked out for this many unknown names per workflow: each look-up
#: compares the name with every node id, and a file full of typos must still load fast.
SUGGESTION_BUDGET = 10
#: How many names a "known: ..." list shows before counting the rest.
BRIEF = 6


def check_workflow(
    spec: WorkflowSpec,
    *,
    actions: Collection[str] | None = None,
    partial: Collection[int] = (),
) -> Iterator[Finding]:
    """Yield every semantic problem of ``spec`` as ``(message, node_index, key_path)``.

    ``actions`` are the registered action names. When it is an
    :class:`~dagger_nb.ActionRegistry` or a mapping of names to functions, each
    node's inputs are also checked against its action's signature: an input the
    function cannot take (no such parameter, no ``**kwargs``, no ``ctx`` to read it
    through) and a required parameter no input gives. ``partial`` lists the indexes
    of nodes that failed validation in part: their inputs are incomplete, so their
    signature is not checked.
    """
    with collector_paused():
        findings = list(_findings(spec, actions, partial))
    yield from findings


def _findings(spec: WorkflowSpec, actions: Collection[str] | None, partial: Collection[int]) -> Iterator[Finding]:
    nodes = spec.nodes
    first_index: dict[str, int] = {}
    for index, node in enumerate(nodes):
        first = first_index.setdefault(node.id, index)
        if first != index:
            yield (f"duplicate node id '{node.id}' (first defined as node {first + 1})", index, ("id",))
    names = _Names(first_index)
    # Only what exists is built (no empty set or dict per node): a big workflow then costs O(N + E).
    declared = {node.id: {output.name for output in node.outputs} for node in nodes if node.outputs}
    signatures = _Signatures(actions)
    action_known: dict[str, bool] = {}
    skip_signature = set(partial)
    match = REFERENCE_PATTERN.match
    # Cycles are looked for only when some edge points forward in the file: a workflow whose
    # nodes all come after what they need (the usual way to write one) cannot have one.
    forward = False
    for index, node in enumerate(nodes):
        for position, dependency in enumerate(node.dependencies):
            at = first_index.get(dependency)
            if at is None:
                yield (f"dependency '{dependency}' is not a node{names.known(dependency)}",
                       index, ("dependencies", position))
            elif at >= index:
                forward = True
        for position, spec_input in enumerate(node.inputs):
            reference = spec_input.reference
            if reference is None:
                continue
            node_id, output = split_reference(reference)
            at = first_index.get(node_id)
            if at is None or node_id == "inputs" or not match(reference):
                # Rare: a run input, a bare KEY, an unknown node or a malformed reference.
                problem = _reference_problem(spec_input, names=names)
                if problem is not None:
                    yield (problem, index, ("inputs", position, "reference"))
                continue
            if declared:
                outputs = declared.get(node_id)
                if outputs and output not in outputs:
                    yield (f"input '{spec_input.name}' references output '{output}' that node '{node_id}' does "
                           f"not declare (declared: {brief_list(sorted(outputs))})", index,
                           ("inputs", position, "reference"))
            if at >= index:
                forward = True
        action = node.action
        known = action_known.get(action)
        if known is None:
            known = action_known[action] = actions is None or action in signatures.names
        if not known:
            registered = brief_list(sorted(signatures.names))
            yield (f"unknown action '{action}' (registered: {registered})", index, ("action",))
        elif index not in skip_signature:
            signature = signatures.of(action)
            if signature is not None and not (signature.takes_any and not signature.required):
                yield from _check_signature(node, index, signature)
    if forward:
        graph = _graph(nodes, first_index)
        for cycle in find_cycles(graph):
            yield (f"dependency cycle: {' -> '.join(cycle)}", first_index[cycle[0]], ("dependencies",))


def _graph(nodes: list[NodeSpec], first_index: Mapping[str, int]) -> dict[str, dict[str, None]]:
    """Each node's first definition mapped to the known nodes it needs, for :func:`find_cycles`."""
    graph: dict[str, dict[str, None]] = {}
    for index, node in enumerate(nodes):
        edges = {dependency: None for dependency in node.dependencies if dependency in first_index}
        for spec_input in node.inputs:
            reference = spec_input.reference
            source = spec_input.source
            if reference is None or source is None or not REFERENCE_PATTERN.match(reference):
                continue
            if source[0] != "inputs" and source[0] in first_index:
                edges[source[0]] = None
        if edges and first_index[node.id] == index:
            graph[node.id] = edges
    return graph


class _Names:
    """The node ids, for "(known: ...)" and "did you mean" in problem messages."""

    def __init__(self, index: dict[str, int]) -> None:
        self.index = index
        self.suggestions_left = SUGGESTION_BUDGET
        self._brief: str | None = None
        self._alphabet: list[str] | None = None

    def known(self, name: str) -> str:
        """`` (did you mean 'x'? known: ...)`` naming a handful of ids and counting the rest."""
        if self._brief is None:
            self._brief = ", ".join(itertools.islice(self.index, BRIEF)) or "none"
            if len(self.index) > BRIEF:
                self._brief += f" and {len(self.index) - BRIEF} more"
        close = self._close(name) if len(self.index) > BRIEF else None
        hint = f"did you mean '{close}'? " if close else ""
        return f" ({hint}known: {self._brief})"

    def _close(self, name: str) -> str | None:
        if self.suggestions_left <= 0:
            return None
        self.suggestions_left -= 1
        if len(self.index) > 200:  # difflib compares with every id: look up the ids one edit away instead
            return self._one_edit_away(name)
        import difflib  # only a workflow with a mistake needs it

        matches = difflib.get_close_matches(name, self.index, n=1, cutoff=0.75)
        return matches[0] if matches else None

    def _one_edit_away(self, name: str) -> str | None:
        if self._alphabet is None:
            self._alphabet = sorted(set().union(*map(set, self.index)))
        for position in range(len(name) + 1):
            head, tail = name[:position], name[position:]
            candidates = [head + tail[1:], head + tail[1:2] + tail[:1] + tail[2:]] if tail else []
            candidates += [head + char + tail[1:] for char in self._alphabet] if tail else []
            candidates += [head + char + tail for char in self._alphabet]
            for candidate in candidates:
                if candidate != name and candidate in self.index:
                    return candidate
        return None


def _reference_problem(spec_input: InputSpec, *, names: _Names) -> str | None:
    """What is wrong with a reference the quick test in :func:`_findings` did not pass; None for a run input."""
    name, reference, source = spec_input.name, spec_input.reference or "", spec_input.source
    if not REFERENCE_PATTERN.match(reference) or source is None:
        return (f"input '{name}' has a malformed reference '{reference}' "
                f"(expected 'inputs.KEY' or 'NODE.OUTPUT'){reference_hint(reference, names.index)}")
    node_id = source[0]  # read as the executor reads it: a bare KEY is inputs.KEY
    if node_id == "inputs" or node_id in names.index:
        return None
    return (f"input '{name}' references unknown node '{node_id}'{names.known(node_id)}"
            f"{reference_hint(reference, names.index)}")


def reference_hint(reference: str, node_ids: Collection[str]) -> str:
    """A hint when ``reference`` was meant for a node whose id a reference cannot name.

    Dependencies name a node by its whole id, but a reference splits at the first
    '.' and allows no whitespace, so such a node is valid yet out of its reach.
    Only the prefixes of ``reference`` are looked up, so a set or dict of ids keeps
    this independent of the number of nodes.
    """
    end = reference.find(".")
    while end > 0:
        node_id = reference[:end]
        if node_id in node_ids and ("." in node_id or any(c.isspace() for c in node_id)):
            what = "'.'" if "." in node_id else "whitespace"
            return f"; node '{node_id}' cannot be referenced because its id contains {what}: rename it"
        end = reference.find(".", end + 1)
    return ""


@dataclass(frozen=True, slots=True)
class _Signature:
    """What a node's inputs must match in its action's parameters."""

    takes_any: bool
    parameters: tuple[str, ...]
    required: tuple[str, ...]


class _Signatures:
    """The registered action names and, when the functions are known, their signatures."""

    def __init__(self, actions: Collection[str] | None) -> None:
        self.names: Collection[str] = () if actions is None else _as_set(actions)
        lookup = getattr(actions, "get", None)
        self._lookup: Callable[[str], Any] | None = lookup if callable(lookup) else None
        self._cache: dict[str, _Signature | None] = {}

    def of(self, action: str) -> _Signature | None:
        if self._lookup is None or action not in self.names:
            return None
        if action not in self._cache:
            self._cache[action] = _signature(self._lookup(action))
        return self._cache[action]


def _as_set(actions: Collection[str]) -> Collection[str]:
    return actions if isinstance(actions, set | frozenset | Mapping) else set(actions)


def _signature(registered: Any) -> _Signature | None:
    fn = getattr(registered, "fn", registered)
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = inspect.Parameter
    named = [p for p in parameters if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)]
    # `ctx` is the NodeContext, which also carries every input: such an action may read its inputs there.
    takes_any = any(p.kind is kinds.VAR_KEYWORD or p.name == "ctx" for p in parameters)
    required = tuple(
        p.name for p in parameters
        if p.default is p.empty and p.name != "ctx" and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
    )
    return _Signature(takes_any, tuple(p.name for p in named), required)


def _check_signature(node: NodeSpec, index: int, signature: _Signature | None) -> Iterator[Finding]:
    if signature is None:
        return
    given = {spec_input.name for spec_input in node.inputs}
    if not signature.takes_any:
        accepted = set(signature.parameters)
        for position, spec_input in enumerate(node.inputs):
            if spec_input.name not in accepted:
                import difflib

                close = difflib.get_close_matches(spec_input.name, signature.parameters, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                yield (f"input '{spec_input.name}' is not a parameter of action '{node.action}' "
                       f"({hint}parameters: {brief_list(signature.parameters)})",
                       index, ("inputs", position, "name"))
    for parameter in signature.required:
        if parameter in given and parameter not in signature.parameters:
            yield (f"action '{node.action}' takes '{parameter}' by position only, which an input cannot give",
                   index, ("action",))
        elif parameter not in given:
            yield (f"action '{node.action}' needs '{parameter}', which no input of this node gives "
                   f"(inputs: {brief_list([spec_input.name for spec_input in node.inputs])})",
                   index, ("action",))


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
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
