"""The plan of a workflow: its graph and compiled inputs, built in one pass, equal parts shared."""

from __future__ import annotations

import gc

import pytest

from dagger_nb import InputSpec, NodeSpec, WorkflowSpec
from dagger_nb._gc import collector_paused
from dagger_nb.dag.plan import Plan


def _node(node_id: str, *references: str, dependencies: tuple[str, ...] = (), **values: object) -> NodeSpec:
    inputs = [InputSpec(name=f"x{i}", reference=reference) for i, reference in enumerate(references)]
    inputs += [InputSpec(name=name, value=value) for name, value in values.items()]
    return NodeSpec(id=node_id, action="a", inputs=inputs, dependencies=list(dependencies))


def _workflow(*nodes: NodeSpec) -> WorkflowSpec:
    return WorkflowSpec(name="w", nodes=list(nodes))


def test_the_plan_reads_references_explicit_dependencies_and_literals() -> None:
    spec = _workflow(
        _node("root", "inputs.seed", "bare"),
        _node("left", "root.result", "root.other", options=[1, 2]),
        _node("right", "root.result", dependencies=("left",)),
        _node("sink", "right.result", "left.result", "inputs.seed", dependencies=("right",)),
    )

    plan = Plan.of(spec)

    assert plan.dependencies == {"root": (), "left": ("root",), "right": ("left", "root"),
                                 "sink": ("right", "left")}
    assert plan.dependents == {"root": ("left", "right"), "left": ("right", "sink"), "right": ("sink",),
                               "sink": ()}
    assert plan.inputs["root"] == (("x0", "inputs", "seed", None, "inputs.seed"),
                                   ("x1", "inputs", "bare", None, "bare"))
    assert plan.inputs["left"] == (("x0", "root", "result", None, "root.result"),
                                   ("x1", "root", "other", None, "root.other"),
                                   ("options", None, "", [1, 2], None))
    assert all(isinstance(users, tuple) for users in plan.dependents.values())


def test_nodes_of_a_fan_out_share_their_plan_parts() -> None:
    spec = _workflow(_node("root"), *[_node(f"c{i}", "root.result") for i in range(50)],
                     _node("sink", *[f"c{i}.result" for i in range(50)]))

    plan = Plan.of(spec)

    assert len({id(plan.inputs[f"c{i}"]) for i in range(50)}) == 1
    assert len({id(plan.dependencies[f"c{i}"]) for i in range(50)}) == 1
    assert len({id(plan.dependents[f"c{i}"]) for i in range(50)}) == 1
    assert plan.dependents["root"] == tuple(f"c{i}" for i in range(50))
    assert plan.dependencies["sink"] == tuple(f"c{i}" for i in range(50))


def test_literal_inputs_are_never_merged_with_equal_ones_of_another_type() -> None:
    spec = _workflow(_node("a", flag=1), _node("b", flag=True))

    plan = Plan.of(spec)

    assert plan.inputs["a"][0][3] is 1 and plan.inputs["b"][0][3] is True  # noqa: F632


def test_a_copy_grows_without_changing_the_plan_it_came_from() -> None:
    plan = Plan.of(_workflow(_node("root"), _node("a", "root.result")))
    grown = plan.copy()

    grown.extend([_node("b", "root.result", "a.result")])

    assert grown.dependents["root"] == ["a", "b"] and grown.dependencies["b"] == ("root", "a")
    assert plan.dependents["root"] == ("a",) and "b" not in plan.dependencies


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_the_collector_pause_restores_the_state_it_found(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(RuntimeError, match="inside"), collector_paused():
            assert not gc.isenabled()
            raise RuntimeError("inside")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
