"""Nodes and inputs given the same fields share one fields set; no change to one reaches another."""

from __future__ import annotations

import copy
import pickle

import pytest

from dagger_nb.dag.loader import load_workflow
from dagger_nb.dag.spec import InputSpec, NodeSpec, WorkflowSpec


def _node(node_id: str) -> NodeSpec:
    return NodeSpec(id=node_id, action="x", inputs=[InputSpec(name="a", reference="up.out")])


def test_setting_a_field_of_one_node_leaves_the_others_given_fields_alone() -> None:
    first, second = _node("n1"), _node("n2")
    assert first.model_fields_set is second.model_fields_set  # shared while nobody changes them
    first.timeout = 5.0
    first.inputs[0].description = "rows"
    assert first.model_fields_set == {"id", "action", "inputs", "timeout"}
    assert second.model_fields_set == {"id", "action", "inputs"}
    assert second.inputs[0].model_fields_set == {"name", "reference"}
    assert first.model_dump(exclude_unset=True) == {
        "id": "n1",
        "action": "x",
        "inputs": [{"name": "a", "reference": "up.out", "description": "rows"}],
        "timeout": 5.0,
    }
    assert second.model_dump(exclude_unset=True) == {
        "id": "n2",
        "action": "x",
        "inputs": [{"name": "a", "reference": "up.out"}],
    }


def test_copies_and_pickles_keep_their_own_fields_sets() -> None:
    node = _node("n")
    changed = node.model_copy(update={"description": "later"})
    deep = copy.deepcopy(node)
    deep.failure = "cleanup"
    restored = pickle.loads(pickle.dumps(node))
    restored.try_count = 2
    assert changed.model_fields_set == {"id", "action", "inputs", "description"}
    assert deep.model_fields_set == {"id", "action", "inputs", "failure"}
    assert restored.model_fields_set == {"id", "action", "inputs", "try_count"}
    assert node.model_fields_set == {"id", "action", "inputs"} == _node("other").model_fields_set


def test_a_node_built_in_python_equals_the_same_node_read_from_a_file() -> None:
    built = WorkflowSpec(name="w", nodes=[NodeSpec(id="up", action="x"), _node("n")])
    loaded = load_workflow(
        "name: w\nnodes:\n  - {id: up, action: x}\n"
        "  - {id: n, action: x, inputs: [{name: a, reference: up.out}]}\n"
    )
    validated = WorkflowSpec.model_validate(built.model_dump(exclude_unset=True))
    assert built == loaded == validated
    for mine, read in zip(built.nodes, loaded.nodes, strict=True):
        assert mine.model_dump_json(exclude_unset=True) == read.model_dump_json(exclude_unset=True)
    assert [node.model_fields_set for node in built.nodes] == [node.model_fields_set for node in loaded.nodes]


def test_nodes_given_no_lists_share_one_read_only_empty_list_that_copies_keep() -> None:
    first, second = NodeSpec(id="a", action="x"), NodeSpec(id="b", action="x", dependencies=None)
    assert first.dependencies is first.outputs is second.inputs  # one object for every empty default
    assert first.dependencies == [] and first.model_dump()["outputs"] == []
    for copied in (copy.deepcopy(first), pickle.loads(pickle.dumps(first)), first.model_copy(deep=True)):
        assert copied.dependencies is first.dependencies
    with pytest.raises(TypeError, match=r"assign a new list instead \(node.dependencies = \[...\]\)"):
        first.dependencies.append("b")
    assert second.dependencies == []  # the failed change reached nobody
    first.dependencies = ["b"]
    assert first.dependencies == ["b"] and second.dependencies == []
    assert NodeSpec(id="c", action="x", dependencies=[]).dependencies is not first.outputs  # given: its own


def test_the_json_schema_of_nodes_shows_their_lists_without_a_warning() -> None:
    properties = NodeSpec.model_json_schema()["properties"]  # pytest turns a schema warning into an error
    assert [properties[key]["type"] for key in ("dependencies", "inputs", "outputs")] == ["array"] * 3
