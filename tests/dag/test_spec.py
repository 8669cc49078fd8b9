"""The workflow models on their own: defaults, retry strategies, graph queries."""

from __future__ import annotations

import gc
import time

import pytest
from pydantic import ValidationError

from dagger_nb.dag.actions import ActionRegistry
from dagger_nb.dag.executor import DagExecutor
from dagger_nb.dag.loader import load_workflow
from dagger_nb.dag.spec import (
    MAX_ATTEMPTS,
    DagConfig,
    HumanTimeoutAction,
    InputSpec,
    NodeSpec,
    OnFailure,
    OutputSpec,
    RetryStrategy,
    WorkflowSpec,
)
from dagger_nb.dag.validation import check_workflow
from dagger_nb.errors import DaggerError, WorkflowSpecError


def _workflow(*nodes: NodeSpec, name: str = "w") -> WorkflowSpec:
    return WorkflowSpec(name=name, nodes=list(nodes))


def _ref(name: str, reference: str) -> InputSpec:
    return InputSpec(name=name, reference=reference)


# --- defaults ---------------------------------------------------------------------------------


def test_config_defaults_are_the_documented_ones() -> None:
    config = DagConfig()
    assert config.max_attempts == 3
    assert config.on_failure is OnFailure.PAUSE
    assert config.timeout_seconds == 3600
    assert config.max_iterations == 50
    assert config.retry_strategy == RetryStrategy(
        kind="exponential", initial_delay_secs=2, max_delay_secs=60, multiplier=2.0
    )
    assert config.enable_parallel_execution is True
    assert config.max_parallel_nodes == 8
    assert config.review_frequency is None
    assert config.human_wait_minutes is None
    assert config.human_timeout_action is HumanTimeoutAction.AUTOPILOT
    assert config.max_tokens is None
    assert config.enable_incremental_cache is False
    assert config.cache_snapshot_interval == 60


def test_minimal_node_defaults() -> None:
    node = NodeSpec(id="a", action="load")
    assert node.dependencies == []
    assert node.inputs == []
    assert node.outputs == []
    assert node.failure is None
    assert node.failure_handler is None
    assert node.onfailure is True
    assert node.description is None
    assert node.timeout is None
    assert node.try_count is None
    assert node.instructions is None


def test_minimal_workflow_defaults() -> None:
    spec = WorkflowSpec(name="w")
    assert spec.nodes == []
    assert spec.tags == []
    assert spec.config == DagConfig()
    assert (spec.description, spec.author, spec.version, spec.signature, spec.instructions) == (
        None,
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("node", "config", "expected"),
    [
        (NodeSpec(id="a", action="x"), DagConfig(), 3),
        (NodeSpec(id="a", action="x"), DagConfig(max_attempts=7), 7),
        (NodeSpec(id="a", action="x", try_count=2), DagConfig(max_attempts=7), 2),
        (NodeSpec(id="a", action="x", try_count=5, onfailure=False), DagConfig(), 1),
        (NodeSpec(id="a", action="x", onfailure=False), DagConfig(max_attempts=4), 1),
    ],
    ids=[
        "config-default",
        "config-max-attempts",
        "try-count-wins",
        "no-onfailure-try-count",
        "no-onfailure-config",
    ],
)
def test_attempts(node: NodeSpec, config: DagConfig, expected: int) -> None:
    assert node.attempts(config) == expected


@pytest.mark.parametrize(
    ("failure", "handler"),
    [(None, None), ("", None), ("cleanup", "cleanup")],
    ids=["absent", "empty", "named"],
)
def test_failure_handler(failure: str | None, handler: str | None) -> None:
    assert NodeSpec(id="a", action="x", failure=failure).failure_handler == handler


@pytest.mark.parametrize(
    ("enabled", "nodes", "expected"),
    [(True, 8, 8), (True, 2, 2), (False, 8, 1)],
    ids=["default", "limited", "sequential"],
)
def test_parallelism(enabled: bool, nodes: int, expected: int) -> None:
    config = DagConfig(enable_parallel_execution=enabled, max_parallel_nodes=nodes)
    assert config.parallelism == expected


# --- enums in any case ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("Continue", OnFailure.CONTINUE),
        ("continue", OnFailure.CONTINUE),
        ("STOP", OnFailure.STOP),
        ("Stop", OnFailure.STOP),
        ("pause", OnFailure.PAUSE),
        ("PaUsE", OnFailure.PAUSE),
    ],
    ids=lambda value: str(value),
)
def test_on_failure_any_case(spelling: str, expected: OnFailure) -> None:
    assert DagConfig.model_validate({"on_failure": spelling}).on_failure is expected


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [("Autopilot", HumanTimeoutAction.AUTOPILOT), ("PAUSE", HumanTimeoutAction.PAUSE)],
    ids=["Autopilot", "PAUSE"],
)
def test_human_timeout_action_any_case(spelling: str, expected: HumanTimeoutAction) -> None:
    assert DagConfig.model_validate({"human_timeout_action": spelling}).human_timeout_action is expected


# --- retry strategies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Immediate", RetryStrategy(kind="immediate")),
        ("immediate", RetryStrategy(kind="immediate")),
        ({"Immediate": None}, RetryStrategy(kind="immediate")),
        ({"Linear": {"delay_secs": 1}}, RetryStrategy(kind="linear", delay_secs=1)),
        ({"Linear": {}}, RetryStrategy(kind="linear", delay_secs=1.0)),
        (
            {"Exponential": {"initial_delay_secs": 2, "max_delay_secs": 60, "multiplier": 2.0}},
            RetryStrategy(kind="exponential", initial_delay_secs=2, max_delay_secs=60, multiplier=2.0),
        ),
        (
            {"Exponential": {"initial_delay_secs": 0.5}},
            RetryStrategy(kind="exponential", initial_delay_secs=0.5),
        ),
    ],
    ids=[
        "Immediate",
        "immediate",
        "Immediate-mapping",
        "Linear",
        "Linear-defaults",
        "Exponential",
        "Exponential-partial",
    ],
)
def test_retry_strategy_spellings(raw: object, expected: RetryStrategy) -> None:
    assert RetryStrategy.model_validate(raw) == expected


@pytest.mark.parametrize(
    ("strategy", "delays"),
    [
        (RetryStrategy(kind="immediate"), [0, 0, 0, 0]),
        (RetryStrategy(kind="linear", delay_secs=1.5), [0, 1.5, 1.5, 1.5]),
        (RetryStrategy(), [0, 2, 4, 8, 16, 32, 60, 60, 60]),
        (RetryStrategy(initial_delay_secs=1, max_delay_secs=30, multiplier=3.0), [0, 1, 3, 9, 27, 30, 30]),
        (RetryStrategy(initial_delay_secs=5, max_delay_secs=5, multiplier=1.0), [0, 5, 5, 5]),
        (RetryStrategy(initial_delay_secs=0, max_delay_secs=10), [0, 0, 0]),
    ],
    ids=[
        "immediate",
        "linear",
        "exponential-default-capped-at-60",
        "exponential-x3-capped-at-30",
        "exponential-flat",
        "exponential-zero",
    ],
)
def test_retry_delay_per_attempt(strategy: RetryStrategy, delays: list[float]) -> None:
    assert [strategy.delay(attempt=attempt) for attempt in range(1, len(delays) + 1)] == delays


def test_retry_delay_zero_or_negative_attempt_is_no_wait() -> None:
    assert RetryStrategy().delay(attempt=0) == 0.0


@pytest.mark.parametrize(
    ("strategy", "dumped"),
    [
        (RetryStrategy(kind="immediate"), "Immediate"),
        (RetryStrategy(kind="linear", delay_secs=1), {"Linear": {"delay_secs": 1.0}}),
        (
            RetryStrategy(),
            {"Exponential": {"initial_delay_secs": 2.0, "max_delay_secs": 60.0, "multiplier": 2.0}},
        ),
    ],
    ids=["immediate", "linear", "exponential"],
)
def test_retry_strategy_dumps_in_rust_spelling(strategy: RetryStrategy, dumped: object) -> None:
    assert strategy.model_dump() == dumped
    assert RetryStrategy.model_validate(dumped) == strategy


# --- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "source"),
    [
        (InputSpec(name="x", reference="inputs.num1"), ("inputs", "num1")),
        (InputSpec(name="x", reference="num1"), ("inputs", "num1")),
        (InputSpec(name="x", reference="load.rows"), ("load", "rows")),
        (InputSpec(name="x", reference="load.rows.first"), ("load", "rows.first")),
        (InputSpec(name="x", value=3), None),
        (InputSpec(name="x", value=None), None),
    ],
    ids=["run-input", "bare-run-input", "node-output", "dotted-output", "literal", "literal-null"],
)
def test_input_source(spec: InputSpec, source: tuple[str, str] | None) -> None:
    assert spec.source == source


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x"}, "input 'x' needs a 'reference' or a 'value'"),
        (
            {"name": "x", "reference": "inputs.a", "value": 1},
            "input 'x' has both 'reference' and 'value'; keep one",
        ),
    ],
    ids=["neither", "both"],
)
def test_input_needs_exactly_one_source(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InputSpec.model_validate(raw)


def test_outputs_keep_informational_type() -> None:
    assert OutputSpec(name="sum", type="i32").type == "i32"


# --- graph queries ----------------------------------------------------------------------------


def test_node_by_id() -> None:
    spec = _workflow(NodeSpec(id="a", action="load"), NodeSpec(id="b", action="clean"))
    assert spec.node("b").action == "clean"


def test_unknown_node_lists_the_known_ones() -> None:
    spec = _workflow(NodeSpec(id="a", action="load"), NodeSpec(id="b", action="clean"), name="etl")
    with pytest.raises(DaggerError, match=r"^workflow 'etl' has no node 'z' \(known: a, b\)$"):
        spec.node("z")
    with pytest.raises(DaggerError, match=r"^workflow 'empty' has no node 'z' \(known: none\)$"):
        _workflow(name="empty").node("z")


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (NodeSpec(id="c", action="x"), []),
        (NodeSpec(id="c", action="x", dependencies=["a"]), ["a"]),
        (NodeSpec(id="c", action="x", inputs=[_ref("i", "a.rows")]), ["a"]),
        (NodeSpec(id="c", action="x", dependencies=["b"], inputs=[_ref("i", "a.rows")]), ["b", "a"]),
        (
            NodeSpec(
                id="c",
                action="x",
                dependencies=["a"],
                inputs=[_ref("i", "a.rows"), _ref("j", "a.cols"), _ref("k", "b.n")],
            ),
            ["a", "b"],
        ),
        (NodeSpec(id="c", action="x", dependencies=["a", "a"]), ["a"]),
        (NodeSpec(id="c", action="x", inputs=[_ref("i", "inputs.path"), _ref("j", "path")]), []),
        (NodeSpec(id="c", action="x", inputs=[InputSpec(name="i", value="a.rows")]), []),
    ],
    ids=[
        "none",
        "explicit",
        "implied",
        "explicit-then-implied",
        "no-duplicates",
        "duplicate-explicit",
        "run-inputs-are-not-nodes",
        "literal-is-not-a-reference",
    ],
)
def test_dependencies(node: NodeSpec, expected: list[str]) -> None:
    spec = _workflow(NodeSpec(id="a", action="x"), NodeSpec(id="b", action="x"), node)
    assert spec.dependencies("c") == expected


def test_dependencies_of_unknown_node() -> None:
    with pytest.raises(DaggerError, match=r"has no node 'z'"):
        _workflow(NodeSpec(id="a", action="x")).dependencies("z")


def test_dependency_map() -> None:
    spec = _workflow(
        NodeSpec(id="a", action="x"),
        NodeSpec(id="b", action="x", inputs=[_ref("i", "a.o")]),
        NodeSpec(id="c", action="x", dependencies=["a", "b"]),
    )
    assert spec.dependency_map() == {"a": [], "b": ["a"], "c": ["a", "b"]}


@pytest.mark.parametrize(
    ("nodes", "order"),
    [
        ([], []),
        ([NodeSpec(id="a", action="x")], ["a"]),
        (
            [
                NodeSpec(id="c", action="x", dependencies=["b"]),
                NodeSpec(id="b", action="x", dependencies=["a"]),
                NodeSpec(id="a", action="x"),
            ],
            ["a", "b", "c"],
        ),
        (
            [
                NodeSpec(id="report", action="x", dependencies=["left", "right"]),
                NodeSpec(id="right", action="x", inputs=[_ref("i", "load.rows")]),
                NodeSpec(id="left", action="x", dependencies=["load"]),
                NodeSpec(id="load", action="x"),
            ],
            ["load", "right", "left", "report"],
        ),
        (
            [NodeSpec(id="z", action="x"), NodeSpec(id="y", action="x"), NodeSpec(id="x", action="x")],
            ["z", "y", "x"],
        ),
    ],
    ids=["empty", "single", "reversed-chain", "diamond-file-order-breaks-ties", "independent-file-order"],
)
def test_topological_order(nodes: list[NodeSpec], order: list[str]) -> None:
    assert _workflow(*nodes).topological_order() == order


def test_version_number_kept_as_text() -> None:
    assert WorkflowSpec.model_validate({"name": "w", "version": 1.5}).version == "1.5"
    assert WorkflowSpec.model_validate({"name": "w", "version": 2}).version == "2"


def test_to_yaml_leaves_out_defaults() -> None:
    spec = _workflow(NodeSpec(id="a", action="load"))
    assert spec.to_yaml() == "name: w\nnodes:\n- id: a\n  action: load\n"


# --- the Rust format: null means default, instructions as a list ------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "max_attempts",
        "max_iterations",
        "on_failure",
        "retry_strategy",
        "enable_parallel_execution",
        "max_parallel_nodes",
        "human_timeout_action",
        "enable_incremental_cache",
        "cache_snapshot_interval",
    ],
)
def test_null_config_key_means_its_default(key: str) -> None:
    assert DagConfig.model_validate({key: None}) == DagConfig()
    assert load_workflow(f"name: w\nconfig:\n  {key}: null\nnodes: []\n").config == DagConfig()


@pytest.mark.parametrize(("key", "value"), [("timeout_seconds", None), ("review_frequency", None)])
def test_null_keeps_its_meaning_where_null_is_a_value(key: str, value: None) -> None:
    # `timeout_seconds: null` is "no run timeout", not the default hour.
    assert getattr(DagConfig.model_validate({key: None}), key) is value


def test_null_node_keys_mean_their_defaults() -> None:
    node = NodeSpec.model_validate(
        {"id": "a", "action": "x", "dependencies": None, "inputs": None, "outputs": None, "onfailure": None}
    )
    assert node == NodeSpec(id="a", action="x")
    assert node.model_fields_set == {"id", "action"}  # a null key counts as not given


@pytest.mark.parametrize("instructions", ["one text", ["first", "second"], []])
def test_instructions_are_text_or_a_list_kept_as_given(instructions: str | list[str]) -> None:
    spec = WorkflowSpec(
        name="w", instructions=instructions, nodes=[NodeSpec(id="a", action="x", instructions=instructions)]
    )
    reloaded = load_workflow(spec.to_yaml())
    assert reloaded.instructions == instructions
    assert reloaded.nodes[0].instructions == instructions


def test_instructions_list_in_yaml() -> None:
    spec = load_workflow("name: w\ninstructions:\n  - Be brief.\n  - Cite.\nnodes:\n  - {id: a, action: x}\n")
    assert spec.instructions == ["Be brief.", "Cite."]
    assert "instructions:\n- Be brief.\n- Cite.\n" in spec.to_yaml()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"timeout": True}, "a boolean is not a number"),
        ({"try_count": False}, "a boolean is not a number"),
        ({"try_count": 1001}, "less than or equal to 1000"),
        ({"try_count": 10**400}, "less than or equal to 1000"),
        ({"timeout": float("inf")}, "finite number"),
    ],
)
def test_node_numbers_are_numbers_within_bounds(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NodeSpec.model_validate({"id": "a", "action": "x", **raw})


def test_attempt_bounds_accept_the_bound_itself() -> None:
    assert NodeSpec(id="a", action="x", try_count=MAX_ATTEMPTS).try_count == 1000
    assert DagConfig(max_attempts=MAX_ATTEMPTS).max_attempts == 1000


def test_unknown_node_list_is_brief() -> None:
    spec = WorkflowSpec(name="w", nodes=[NodeSpec(id=f"n{i}", action="x") for i in range(1000)])
    with pytest.raises(DaggerError, match=r"\(known: n0, n1, n2, n3, n4, n5 and 994 more\)$"):
        spec.node("zz")


# --- inputs checked against the action's signature --------------------------------------------


def _registry() -> ActionRegistry:
    registry = ActionRegistry()
    registry.register("greet", lambda name, greeting="hello": f"{greeting} {name}")
    registry.register("anything", lambda **kwargs: kwargs)
    registry.register("rusty", lambda ctx: None)
    registry.register("positional", lambda x, /: x)
    return registry


SIGNATURE = [
    pytest.param("greet", "{name: name, value: bees}", None, id="exact"),
    pytest.param("greet", "{name: name, value: b}, {name: greeting, value: hi}", None, id="with-default"),
    pytest.param(
        "greet",
        "{name: nam, value: bees}",
        [
            (5, "input 'nam' is not a parameter of action 'greet' (did you mean 'name'? parameters: name, greeting)"),
            (4, "action 'greet' needs 'name', which no input of this node gives (inputs: nam)"),
        ],
        id="misspelt-input",
    ),
    pytest.param(
        "greet",
        "",
        [(4, "action 'greet' needs 'name', which no input of this node gives (inputs: none)")],
        id="missing",
    ),
    pytest.param("anything", "{name: whatever, value: 1}", None, id="kwargs-takes-anything"),
    pytest.param("rusty", "{name: whatever, value: 1}", None, id="ctx-reads-inputs-itself"),
    pytest.param(
        "positional",
        "{name: x, value: 1}",
        [
            (5, "input 'x' is not a parameter of action 'positional' (parameters: none)"),
            (4, "action 'positional' takes 'x' by position only, which an input cannot give"),
        ],
        id="positional-only",
    ),
]


@pytest.mark.parametrize(("action", "inputs", "expected"), SIGNATURE)
def test_inputs_are_checked_against_the_action_signature(
    action: str, inputs: str, expected: list[tuple[int, str]] | None
) -> None:
    text = f"name: w\nnodes:\n  - id: a\n    action: {action}\n    inputs: [{inputs}]\n"
    if expected is None:
        load_workflow(text, actions=_registry())
        return
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text, actions=_registry())
    assert sorted((p.line, p.message) for p in caught.value.problems) == sorted(expected)


def test_signature_is_checked_for_a_mapping_of_functions_and_not_for_names() -> None:
    text = "name: w\nnodes:\n  - {id: a, action: greet, inputs: [{name: nam, value: 1}]}\n"
    with pytest.raises(WorkflowSpecError, match="input 'nam' is not a parameter"):
        load_workflow(text, actions={"greet": lambda name: name})
    load_workflow(text, actions=["greet"])  # names only: nothing to check against


def test_executor_checks_signatures_when_loading() -> None:
    executor = DagExecutor(_registry())
    with pytest.raises(WorkflowSpecError, match="<string>:3: workflow 'w', node 'a': input 'nam' is not a param"):
        executor.load_yaml("name: w\nnodes:\n  - {id: a, action: greet, inputs: [{name: nam, value: 1}]}\n")


def test_a_node_with_an_unknown_key_still_gets_every_other_check() -> None:
    text = (
        "name: w\nnodes:\n  - id: a\n    action: greet\n    colour: red\n    dependencies: [ghost]\n"
        "    inputs:\n      - {name: nam, reference: nowhere.out}\n      - {name: bad}\n"
    )
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text, actions=_registry())
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (5, "unknown key 'colour'"),
        (6, "dependency 'ghost' is not a node (known: a)"),
        (8, "input 'nam' references unknown node 'nowhere' (known: a)"),
        (9, "key 'inputs[1]': input 'bad' needs a 'reference' or a 'value'"),
    ]


def test_a_node_with_a_bad_action_still_gets_its_references_checked() -> None:
    text = "name: w\nnodes:\n  - id: a\n    action: 5\n    inputs: [{name: x, reference: zz.out}]\n"
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text, actions=_registry())
    assert [(p.line, p.message.split(" (")[0]) for p in caught.value.problems] == [
        (4, "key 'action': input should be a valid string"),
        (5, "input 'x' references unknown node 'zz'"),
    ]


# --- linear build -----------------------------------------------------------------------------


def _fan_in(inputs: int) -> WorkflowSpec:
    nodes = [NodeSpec(id=f"m{i}", action="x") for i in range(inputs)]
    sink = NodeSpec(
        id="sink",
        action="x",
        dependencies=[f"m{i}" for i in range(inputs)],
        inputs=[InputSpec(name=f"x{i}", reference=f"m{i}.result") for i in range(inputs)],
    )
    return WorkflowSpec(name="fan_in", nodes=[*nodes, sink])


def _check_seconds(spec: WorkflowSpec) -> float:
    best = float("inf")
    gc.disable()
    try:
        for _ in range(5):
            started = time.process_time()
            assert list(check_workflow(spec, actions=["x"])) == []
            best = min(best, time.process_time() - started)
    finally:
        gc.enable()
    return best


def test_validation_is_linear_in_a_node_inputs() -> None:
    # 20x the inputs: a linear check takes about 20x (up to 60x with a busy machine's cache noise);
    # list look-ups per input, as before, take about 400x. CPU time of this process, best of five.
    small, big = _check_seconds(_fan_in(2000)), _check_seconds(_fan_in(40_000))
    assert big < 60 * max(small, 1e-4), f"2k inputs {small:.4f} s, 40k inputs {big:.4f} s"


def test_node_lookup_follows_changes_to_the_node_list() -> None:
    spec = WorkflowSpec(name="w", nodes=[NodeSpec(id=f"n{i}", action="x") for i in range(3)])
    assert spec.node("n2").id == "n2"
    spec.nodes.append(NodeSpec(id="late", action="x"))
    spec.nodes[0] = NodeSpec(id="first", action="x")
    assert spec.node("late").id == "late" and spec.node("first").id == "first"
    with pytest.raises(DaggerError, match="has no node 'n0'"):
        spec.node("n0")
    copy = spec.model_copy(update={"nodes": [NodeSpec(id="only", action="x")]})
    assert copy.node("only").id == "only"
    with pytest.raises(DaggerError, match="has no node 'n1'"):
        copy.node("n1")
    assert spec == WorkflowSpec.model_validate(spec.model_dump())  # the index takes no part in ==


def test_looking_up_every_node_is_linear() -> None:
    # 20 times the nodes may take up to 60 times as long (noise on a busy machine, caches), while a
    # lookup that scans the nodes would take about 400 times as long. Each case is timed as the best
    # of three, without the garbage collector, on this process's CPU time.
    def seconds(count: int) -> float:
        spec = WorkflowSpec(name="w", nodes=[NodeSpec(id=f"n{i}", action="x") for i in range(count)])
        ids = [node.id for node in spec.nodes]
        gc.disable()
        try:
            started = time.process_time()
            for node_id in ids:  # the first lookup builds the index
                spec.node(node_id)
            return time.process_time() - started
        finally:
            gc.enable()

    small = min(seconds(2000) for _ in range(3))
    big = min(seconds(40_000) for _ in range(3))
    assert big < 60 * max(small, 1e-4), f"2k lookups {small:.4f} s, 40k lookups {big:.4f} s"
