"""The plan of a workflow: what every run of it shares (the graph and each node's compiled inputs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagger_nb._gc import collector_paused
from dagger_nb.cache import INPUTS
from dagger_nb.dag.spec import NodeSpec, WorkflowSpec, split_reference

__all__ = ["CompiledInput", "Plan"]

CompiledInput = tuple[str, "str | None", str, Any, "str | None"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What every run of one workflow shares: the graph and each node's compiled inputs.

    Built once per workflow, so starting a run of 10,000 nodes does not redo it.
    """

    #: node id -> the nodes it needs; node id -> the nodes that need it (tuples once built, lists
    #: where a growing run's copy added to them)
    dependencies: dict[str, Sequence[str]]
    dependents: dict[str, Sequence[str]]
    #: node id -> its inputs as (name, namespace, key, literal value, reference); namespace None = literal
    inputs: dict[str, tuple[CompiledInput, ...]]

    @classmethod
    def of(cls, spec: WorkflowSpec) -> Plan:
        """Compile ``spec``."""
        plan = cls({}, {}, {})
        with collector_paused():
            plan.extend(spec.nodes)
        dependents = plan.dependents
        for node, users in dependents.items():  # tuples throughout once built
            if isinstance(users, list):
                dependents[node] = tuple(users)
        return plan

    def extend(self, nodes: list[NodeSpec]) -> None:
        """Add ``nodes`` (whose dependencies are already in the plan or among ``nodes``)."""
        # One pass over the inputs, each reference split once (as node_dependencies and
        # InputSpec.source read them), with plain tuples: this runs for every node of a workflow.
        dependencies, dependents, inputs = self.dependencies, self.dependents, self.inputs
        # One string object per node id and output name, however many inputs name it: the
        # references' own parts would be new strings for each input (big fan-ins hold millions).
        names = {node_id: node_id for node_id in dependencies}
        names.update((node.id, node.id) for node in nodes)
        share = names.setdefault
        # And one tuple for equal tuples: the nodes of a fan-out read the same inputs from the
        # same node, so they share their compiled inputs, dependencies and dependents.
        tuples: dict[tuple[Any, ...], Any] = {}
        same = tuples.setdefault
        for node in nodes:
            node_id = node.id
            needs = dict.fromkeys([share(d, d) for d in node.dependencies]) if node.dependencies else {}
            compiled: list[CompiledInput] = []
            literals = False
            for item in node.inputs:
                reference = item.reference
                if reference is None:  # a value may be unhashable, or equal to another of a different type
                    compiled.append((item.name, None, "", item.value, None))
                    literals = True
                    continue
                namespace, key = split_reference(reference)
                if namespace == INPUTS:
                    namespace = INPUTS
                else:
                    namespace = share(namespace, namespace)
                    needs[namespace] = None  # an id already there keeps its place
                compiled.append((item.name, namespace, share(key, key), None, reference))
            needed = tuple(needs)
            dependencies[node_id] = same(needed, needed)
            dependents.setdefault(node_id, ())
            compiled_inputs = tuple(compiled)
            inputs[node_id] = compiled_inputs if literals else same(compiled_inputs, compiled_inputs)
        for node in nodes:
            node_id = node.id
            for dependency in dependencies[node_id]:
                # A node with one dependent holds a 1-tuple, a list only from the second on:
                # most nodes of big workflows have one dependent, and a list each costs memory
                # and the collector's time.
                users = dependents[dependency]
                if isinstance(users, list):
                    users.append(node_id)
                elif users:
                    dependents[dependency] = [*users, node_id]
                else:
                    user = (node_id,)
                    dependents[dependency] = same(user, user)

    def copy(self) -> Plan:
        """An independent copy, for a run that grows while others share the original."""
        return Plan(
            {node: list(needs) for node, needs in self.dependencies.items()},
            {node: list(users) for node, users in self.dependents.items()},
            dict(self.inputs),
        )
