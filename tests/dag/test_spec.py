"""The workflow models on their own: defaults, retry strategies, graph queries."""

from __future__ import annotations

import pytest

from dagger_nb.dag.spec import (
    DagConfig,
    HumanTimeoutAction,
    InputSpec,
    NodeSpec,
    OnFailure,
    OutputSpec,
    RetryStrategy,
    WorkflowSpec,
)
from dagger_nb.errors import DaggerError


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
    assert config.review_frequency == 5
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
