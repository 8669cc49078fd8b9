"""Loading workflow YAML: the Rust files, every problem kind with its exact message and line."""

from __future__ import annotations

import textwrap
from collections.abc import Collection
from pathlib import Path

import pytest

from dagger_nb.dag.loader import load_workflow, load_workflows, parse_workflow
from dagger_nb.dag.spec import (
    DagConfig,
    HumanTimeoutAction,
    InputSpec,
    OnFailure,
    OutputSpec,
    RetryStrategy,
    WorkflowSpec,
)
from dagger_nb.errors import DaggerError, Problem, WorkflowSpecError


def _yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _problems(text: str, *, actions: Collection[str] | None = None) -> list[tuple[int | None, str]]:
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text, actions=actions)
    return [(problem.line, str(problem)) for problem in caught.value.problems]


# --- the Rust resource files ------------------------------------------------------------------


def test_chain_3_loads_unchanged(resources: Path) -> None:
    spec = load_workflow(resources / "chain_3.yaml")
    assert spec.name == "chain_3"
    assert spec.author == "Rzeznik"
    assert spec.version == "0.0.1"
    assert spec.signature == "example"
    assert spec.tags == ["infrastructure", "math"]
    assert spec.config == DagConfig()
    assert [node.id for node in spec.nodes] == ["node1", "node2", "node3"]
    assert spec.topological_order() == ["node1", "node2", "node3"]
    node1, node2, node3 = spec.nodes
    assert node1.inputs == [
        InputSpec(name="num1", reference="inputs.num1", description="First number to add"),
        InputSpec(name="num2", reference="inputs.num2", description="Second number to add"),
    ]
    assert node1.outputs == [OutputSpec(name="sum", description="Sum of num1 and num2")]
    assert (node1.action, node1.failure, node1.onfailure, node1.timeout, node1.try_count) == (
        "add_numbers",
        "failure_function1",
        False,
        3600,
        3,
    )
    assert node1.attempts(spec.config) == 1
    assert (node2.failure_handler, node2.onfailure, node2.timeout, node2.try_count) == (
        "failure_function2",
        True,
        1800,
        2,
    )
    assert node2.attempts(spec.config) == 2
    assert spec.dependencies("node2") == ["node1"]
    assert (node3.failure, node3.failure_handler, node3.onfailure, node3.timeout, node3.try_count) == (
        "",
        None,
        True,
        None,
        None,
    )
    assert node3.attempts(spec.config) == 3
    assert node3.inputs[0].source == ("node2", "squared_result")


def test_diamond_4_has_two_parallel_branches(resources: Path) -> None:
    spec = load_workflow(resources / "diamond_4.yaml")
    assert spec.version == "1.0.0"
    assert spec.dependency_map() == {
        "load": [],
        "by_region": ["load"],
        "by_month": ["load"],
        "report": ["by_region", "by_month"],
    }
    assert spec.topological_order() == ["load", "by_region", "by_month", "report"]
    assert spec.config.parallelism == 8


def test_empty_nodes_loads(resources: Path) -> None:
    spec = load_workflow(resources / "empty_nodes.yaml")
    assert (spec.name, spec.nodes, spec.topological_order()) == ("empty_nodes", [], [])


def test_config_exponential_reads_every_config_key(resources: Path) -> None:
    spec = load_workflow(resources / "config_exponential.yaml")
    assert spec.config == DagConfig(
        max_attempts=5,
        on_failure=OnFailure.CONTINUE,
        timeout_seconds=600,
        max_iterations=20,
        retry_strategy=RetryStrategy(
            kind="exponential", initial_delay_secs=1, max_delay_secs=30, multiplier=3.0
        ),
        enable_parallel_execution=False,
        max_parallel_nodes=4,
        review_frequency=2,
        human_wait_minutes=15,
        human_timeout_action=HumanTimeoutAction.PAUSE,
        max_tokens=4096,
        enable_incremental_cache=True,
        cache_snapshot_interval=120,
    )
    assert spec.config.parallelism == 1
    assert [spec.config.retry_strategy.delay(attempt=n) for n in range(1, 7)] == [0, 1, 3, 9, 27, 30]
    fetch, parse = spec.nodes
    assert fetch.attempts(spec.config) == 5
    assert parse.attempts(spec.config) == 1


def test_rust_legacy_format(resources: Path) -> None:
    spec = load_workflow(resources / "rust_legacy.yaml")
    assert (spec.version, spec.signature, spec.tags) == ("1.0.0", "3f2a9c", ["legacy", "math"])
    add, double = spec.nodes
    assert add.inputs[0] == InputSpec(name="num1", type="i32", reference="num1")
    assert [spec_input.source for spec_input in add.inputs] == [("inputs", "num1"), ("inputs", "num2")]
    assert add.outputs == [OutputSpec(name="sum", type="i32")]
    assert (add.timeout, add.try_count, add.attempts(spec.config)) == (60, 2, 2)
    assert (double.onfailure, double.failure_handler, double.attempts(spec.config)) == (False, None, 1)
    assert spec.dependencies("double") == ["add"]


def test_every_resource_loads_with_their_actions(resources: Path) -> None:
    names = {path.stem for path in resources.glob("*.yaml")}
    assert {"chain_3", "diamond_4", "empty_nodes", "config_exponential", "rust_legacy"} <= names
    for name in ("chain_3", "diamond_4", "empty_nodes", "config_exponential", "rust_legacy"):
        spec = load_workflow(resources / f"{name}.yaml")
        actions = {node.action for node in spec.nodes}
        assert load_workflow(resources / f"{name}.yaml", actions=actions) == spec


# --- retry strategy and on_failure spellings in YAML -----------------------------------------


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("retry_strategy: Immediate", RetryStrategy(kind="immediate")),
        ("retry_strategy: !Immediate", RetryStrategy(kind="immediate")),
        ("retry_strategy: {Linear: {delay_secs: 1}}", RetryStrategy(kind="linear", delay_secs=1)),
        ("retry_strategy: !Linear {delay_secs: 1}", RetryStrategy(kind="linear", delay_secs=1)),
        ("retry_strategy: !Linear\n    delay_secs: 0", RetryStrategy(kind="linear", delay_secs=0)),
        (
            "retry_strategy:\n    Exponential:\n      initial_delay_secs: 2\n      max_delay_secs: 60\n"
            "      multiplier: 2.0",
            RetryStrategy(kind="exponential", initial_delay_secs=2, max_delay_secs=60, multiplier=2.0),
        ),
        (
            "retry_strategy: !Exponential {initial_delay_secs: 3, max_delay_secs: 9, multiplier: 1.5}",
            RetryStrategy(kind="exponential", initial_delay_secs=3, max_delay_secs=9, multiplier=1.5),
        ),
    ],
    ids=[
        "Immediate",
        "!Immediate",
        "Linear-mapping",
        "!Linear-flow",
        "!Linear-block",
        "Exponential-mapping",
        "!Exponential",
    ],
)
def test_retry_strategy_yaml_spellings(snippet: str, expected: RetryStrategy) -> None:
    spec = load_workflow(f"name: w\nconfig:\n  {snippet}\nnodes: []\n")
    assert spec.config.retry_strategy == expected


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [("Continue", OnFailure.CONTINUE), ("STOP", OnFailure.STOP), ("pause", OnFailure.PAUSE)],
    ids=["Continue", "STOP", "pause"],
)
def test_on_failure_any_case_in_yaml(spelling: str, expected: OnFailure) -> None:
    assert (
        load_workflow(f"name: w\nconfig: {{on_failure: {spelling}}}\nnodes: []\n").config.on_failure
        is expected
    )


@pytest.mark.parametrize(
    "snippet",
    [
        "max_attempts: 1",
        "timeout_seconds: 86400",
        "timeout_seconds: 0.5",
        "max_iterations: 1",
        "max_iterations: 1000",
        "max_parallel_nodes: 1",
        "retry_strategy: !Linear {delay_secs: 0}",
        "retry_strategy: !Exponential {initial_delay_secs: 0, max_delay_secs: 0}",
    ],
)
def test_config_limits_are_inclusive_where_documented(snippet: str) -> None:
    load_workflow(f"name: w\nconfig:\n  {snippet}\nnodes: []\n")


def test_minimal_node_gets_every_default() -> None:
    spec = load_workflow("name: w\nnodes:\n  - {id: a, action: load}\n")
    node = spec.node("a")
    assert (node.dependencies, node.inputs, node.outputs, node.onfailure, node.timeout, node.try_count) == (
        [],
        [],
        [],
        True,
        None,
        None,
    )
    assert node.attempts(spec.config) == 3


def test_literal_values_of_any_yaml_type() -> None:
    spec = load_workflow(
        _yaml("""
        name: w
        nodes:
          - id: a
            action: x
            inputs:
              - {name: n, value: 3}
              - {name: s, value: text}
              - {name: l, value: [1, 2.5, null]}
              - {name: m, value: {k: true}}
              - {name: z, value: null}
        """)
    )
    assert [(spec_input.name, spec_input.value) for spec_input in spec.node("a").inputs] == [
        ("n", 3),
        ("s", "text"),
        ("l", [1, 2.5, None]),
        ("m", {"k": True}),
        ("z", None),
    ]


# --- one case per problem kind ----------------------------------------------------------------

NODE_A = "name: w\nnodes:\n  - id: a\n    action: x\n"

PROBLEMS = [
    pytest.param(
        "name: w\nnodes:\n  - {id: a, action: x\n  - {id: b}\n",
        None,
        [
            (
                4,
                "<string>:4: invalid YAML (column 5): while parsing a flow mapping expected ',' or '}', "
                "but got '{'",
            )
        ],
        id="yaml-syntax-flow",
    ),
    pytest.param(
        "name: w\nnodes:\n  - id: a\n   action: x\n",
        None,
        [
            (
                4,
                "<string>:4: invalid YAML (column 4): while parsing a block collection expected <block end>, "
                "but found '<block mapping start>'",
            )
        ],
        id="yaml-syntax-indent",
    ),
    pytest.param(
        "name: w\nnodes:\n\t- id: a\n",
        None,
        [
            (
                3,
                "<string>:3: invalid YAML (column 1): while scanning for the next token "
                "found character '\\t' "
                "that cannot start any token",
            )
        ],
        id="yaml-syntax-tab",
    ),
    pytest.param(
        "name: w\nnodes: []\n---\nname: v\n",
        None,
        [
            (
                3,
                "<string>:3: invalid YAML (column 1): expected a single document in the stream but found "
                "another document",
            )
        ],
        id="yaml-two-documents",
    ),
    pytest.param(
        "",
        None,
        [(None, "<string>: the document is empty; a workflow needs 'name' and 'nodes'")],
        id="empty-document",
    ),
    pytest.param(
        "- a\n- b\n",
        None,
        [(1, "<string>:1: a workflow must be a mapping with 'name' and 'nodes', got a list")],
        id="not-a-mapping",
    ),
    pytest.param(
        NODE_A + "    timeout: soon\n",
        None,
        [
            (
                5,
                "<string>:5: workflow 'w', node 'a': key 'timeout': input should be a valid number, "
                "unable to parse string as a number (got 'soon')",
            )
        ],
        id="wrong-type-number",
    ),
    pytest.param(
        NODE_A + "    dependencies: b\n",
        None,
        [
            (
                5,
                "<string>:5: workflow 'w', node 'a': key 'dependencies': "
                "input should be a valid list (got 'b')",
            )
        ],
        id="wrong-type-list",
    ),
    pytest.param(
        NODE_A + "    onfailure: maybe\n",
        None,
        [
            (
                5,
                "<string>:5: workflow 'w', node 'a': key 'onfailure': input should be a valid boolean, "
                "unable to interpret input (got 'maybe')",
            )
        ],
        id="wrong-type-bool",
    ),
    pytest.param(
        "name: 5\nnodes: []\n",
        None,
        [(1, "<string>:1: key 'name': input should be a valid string (got 5)")],
        id="wrong-type-name",
    ),
    pytest.param(
        "name: w\nnodes:\n  - id: 1\n    action: x\n",
        None,
        [(3, "<string>:3: workflow 'w': key 'id': input should be a valid string (got 1)")],
        id="wrong-type-id",
    ),
    pytest.param(
        "name: w\nnodes:\n  - a\n",
        None,
        [(3, "<string>:3: workflow 'w': must be a mapping, got text")],
        id="wrong-type-node",
    ),
    pytest.param(
        "name: w\nnodes: 3\n",
        None,
        [(2, "<string>:2: workflow 'w': 'nodes' must be a list of nodes, got int")],
        id="wrong-type-nodes",
    ),
    pytest.param(
        "name: w\nconfig:\n  on_failure: explode\nnodes: []\n",
        None,
        [
            (
                3,
                "<string>:3: workflow 'w': config key 'on_failure': input should be 'continue', 'pause' or "
                "'stop' (got 'explode')",
            )
        ],
        id="wrong-value-on-failure",
    ),
    pytest.param(
        "name: w\nconfig:\n  retry_strategy: Sometimes\nnodes: []\n",
        None,
        [
            (
                3,
                "<string>:3: workflow 'w': config key 'retry_strategy.kind': input should be 'immediate', "
                "'linear' or 'exponential' (got 'sometimes')",
            )
        ],
        id="wrong-value-retry-strategy",
    ),
    pytest.param(
        "name: w\nnodes:\n  - action: load\n",
        None,
        [(3, "<string>:3: workflow 'w': missing required key 'id'")],
        id="missing-id",
    ),
    pytest.param(
        "name: w\nnodes:\n  - id: a\n",
        None,
        [(3, "<string>:3: workflow 'w', node 'a': missing required key 'action'")],
        id="missing-action",
    ),
    pytest.param(
        "nodes:\n  - {id: a, action: x}\n",
        None,
        [(1, "<string>:1: missing required key 'name'")],
        id="missing-name",
    ),
    pytest.param(
        "name: w\nnodes:\n  - {id: a, action: ''}\n",
        None,
        [
            (
                3,
                "<string>:3: workflow 'w', node 'a': key 'action': string should have at least 1 character "
                "(got '')",
            )
        ],
        id="empty-action",
    ),
    pytest.param(
        NODE_A + "    inputs:\n      - name: i\n",
        None,
        [
            (
                6,
                "<string>:6: workflow 'w', node 'a': key 'inputs[0]': input 'i' needs a 'reference' or a "
                "'value'",
            )
        ],
        id="input-without-source",
    ),
    pytest.param(
        NODE_A + "    inputs:\n      - name: i\n        reference: inputs.x\n        value: 3\n",
        None,
        [
            (
                6,
                "<string>:6: workflow 'w', node 'a': key 'inputs[0]': input 'i' has both 'reference' and "
                "'value'; keep one",
            )
        ],
        id="input-with-two-sources",
    ),
    pytest.param(
        NODE_A + "  - id: a\n    action: y\n",
        None,
        [(5, "<string>:5: workflow 'w', node 'a': duplicate node id 'a' (first defined as node 1)")],
        id="duplicate-id",
    ),
    pytest.param(
        NODE_A + "    dependencies: [zz]\n",
        None,
        [(5, "<string>:5: workflow 'w', node 'a': dependency 'zz' is not a node (known: a)")],
        id="dependency-not-a-node",
    ),
    pytest.param(
        NODE_A + "    inputs:\n      - name: d\n        reference: zz.out\n",
        None,
        [(7, "<string>:7: workflow 'w', node 'a': input 'd' references unknown node 'zz' (known: a)")],
        id="unknown-node-reference",
    ),
    pytest.param(
        NODE_A + "  - id: load.csv\n    action: y\n  - id: b\n    action: y\n    inputs:\n      - name: d\n"
        "        reference: load.csv.rows\n",
        None,
        [
            (
                11,
                "<string>:11: workflow 'w', node 'b': input 'd' references unknown node 'load' (known: a, "
                "load.csv, b); node 'load.csv' cannot be referenced because its id contains '.': rename it",
            )
        ],
        id="reference-to-a-dotted-node-id",
    ),
    pytest.param(
        NODE_A + "  - id: load csv\n    action: y\n  - id: b\n    action: y\n    inputs:\n      - name: d\n"
        "        reference: load csv.rows\n",
        None,
        [
            (
                11,
                "<string>:11: workflow 'w', node 'b': input 'd' has a malformed reference 'load csv.rows' "
                "(expected 'inputs.KEY' or 'NODE.OUTPUT'); node 'load csv' cannot be referenced because its id "
                "contains whitespace: rename it",
            )
        ],
        id="reference-to-a-node-id-with-a-space",
    ),
    pytest.param(
        NODE_A + "    outputs:\n      - name: rows\n      - name: cols\n"
        "  - id: b\n    action: y\n    inputs:\n      - name: d\n        reference: a.colour\n",
        None,
        [
            (
                12,
                "<string>:12: workflow 'w', node 'b': input 'd' references output 'colour' "
                "that node 'a' does "
                "not declare (declared: cols, rows)",
            )
        ],
        id="undeclared-output",
    ),
    pytest.param(
        NODE_A + "    inputs:\n      - name: d\n        reference: 'a b'\n",
        None,
        [
            (
                7,
                "<string>:7: workflow 'w', node 'a': input 'd' has a malformed reference 'a b' "
                "(expected 'inputs.KEY' or 'NODE.OUTPUT')",
            )
        ],
        id="malformed-reference-space",
    ),
    pytest.param(
        NODE_A + "    inputs:\n      - name: d\n        reference: .rows\n",
        None,
        [
            (
                7,
                "<string>:7: workflow 'w', node 'a': input 'd' has a malformed reference '.rows' "
                "(expected 'inputs.KEY' or 'NODE.OUTPUT')",
            )
        ],
        id="malformed-reference-no-node",
    ),
    pytest.param(
        NODE_A + "    inputs:\n      - name: d\n        reference: 'a.'\n",
        None,
        [
            (
                7,
                "<string>:7: workflow 'w', node 'a': input 'd' has a malformed reference 'a.' "
                "(expected 'inputs.KEY' or 'NODE.OUTPUT')",
            )
        ],
        id="malformed-reference-no-output",
    ),
    pytest.param(
        _yaml("""
            name: w
            nodes:
              - id: a
                action: x
                dependencies: [b]
              - id: b
                action: x
                dependencies: [c]
              - id: c
                action: x
                dependencies: [a]
            """),
        None,
        [(5, "<string>:5: workflow 'w', node 'a': dependency cycle: a -> b -> c -> a")],
        id="cycle",
    ),
    pytest.param(
        _yaml("""
            name: w
            nodes:
              - id: a
                action: x
                dependencies: [b]
              - id: b
                action: x
                inputs:
                  - {name: i, reference: c.out}
              - id: c
                action: x
                dependencies: [a]
            """),
        None,
        [(5, "<string>:5: workflow 'w', node 'a': dependency cycle: a -> b -> c -> a")],
        id="cycle-implied-by-reference",
    ),
    pytest.param(
        _yaml("""
            name: w
            nodes:
              - id: a
                action: x
                inputs: [{name: i, reference: b.o}]
              - id: b
                action: x
                inputs: [{name: i, reference: a.o}]
            """),
        None,
        [(3, "<string>:3: workflow 'w', node 'a': dependency cycle: a -> b -> a")],
        id="cycle-of-references-only",
    ),
    pytest.param(
        NODE_A + "    dependencies: [a]\n",
        None,
        [(5, "<string>:5: workflow 'w', node 'a': dependency cycle: a -> a")],
        id="self-dependency",
    ),
    pytest.param(
        NODE_A,
        ["load", "clean"],
        [(4, "<string>:4: workflow 'w', node 'a': unknown action 'x' (registered: clean, load)")],
        id="unknown-action",
    ),
    pytest.param(
        NODE_A,
        [],
        [(4, "<string>:4: workflow 'w', node 'a': unknown action 'x' (registered: none)")],
        id="unknown-action-none-registered",
    ),
    *(
        pytest.param(
            f"name: w\nconfig:\n  {key}: {value}\nnodes: []\n",
            None,
            [(3, f"<string>:3: workflow 'w': config key '{key}': input should be {rule} (got {value})")],
            id=f"config-{key}-{value}",
        )
        for key, value, rule in [
            ("max_attempts", 0, "greater than or equal to 1"),
            ("timeout_seconds", 0, "greater than 0"),
            ("timeout_seconds", -5, "greater than 0"),
            ("timeout_seconds", 86401, "less than or equal to 86400"),
            ("max_iterations", 0, "greater than or equal to 1"),
            ("max_iterations", 1001, "less than or equal to 1000"),
            ("max_parallel_nodes", 0, "greater than or equal to 1"),
            ("review_frequency", 0, "greater than or equal to 1"),
            ("human_wait_minutes", 0, "greater than 0"),
            ("max_tokens", 0, "greater than or equal to 1"),
            ("cache_snapshot_interval", 0, "greater than 0"),
        ]
    ),
    pytest.param(
        "name: w\nconfig:\n  retry_strategy: !Linear {delay_secs: -1}\nnodes: []\n",
        None,
        [
            (
                3,
                "<string>:3: workflow 'w': config key 'retry_strategy.delay_secs': "
                "input should be greater than "
                "or equal to 0 (got -1)",
            )
        ],
        id="retry-linear-delay-negative",
    ),
    pytest.param(
        "name: w\nconfig:\n  retry_strategy:\n    Exponential:\n      initial_delay_secs: -2\nnodes: []\n",
        None,
        [
            (
                3,
                "<string>:3: workflow 'w': config key 'retry_strategy.initial_delay_secs': input should be "
                "greater than or equal to 0 (got -2)",
            )
        ],
        id="retry-exponential-initial-negative",
    ),
    pytest.param(
        "name: w\nconfig:\n  retry_strategy: !Exponential\n    max_delay_secs: -2\nnodes: []\n",
        None,
        [
            (
                4,
                "<string>:4: workflow 'w': config key 'retry_strategy.max_delay_secs': input should be "
                "greater than or equal to 0 (got -2)",
            )
        ],
        id="retry-exponential-max-negative",
    ),
    pytest.param(
        "name: w\nconfig:\n  retry_strategy: !Exponential {multiplier: 0.5}\nnodes: []\n",
        None,
        [
            (
                3,
                "<string>:3: workflow 'w': config key 'retry_strategy.multiplier': input should be greater "
                "than or equal to 1 (got 0.5)",
            )
        ],
        id="retry-multiplier-below-one",
    ),
    pytest.param(
        NODE_A + "    dependecies: []\n",
        None,
        [(5, "<string>:5: workflow 'w', node 'a': unknown key 'dependecies' (did you mean 'dependencies'?)")],
        id="unknown-node-key",
    ),
    pytest.param(
        "name: w\ndescripton: x\nnodes: []\n",
        None,
        [(2, "<string>:2: workflow 'w': unknown key 'descripton' (did you mean 'description'?)")],
        id="unknown-workflow-key",
    ),
    pytest.param(
        "name: w\nconfig:\n  max_attempt: 2\nnodes: []\n",
        None,
        [(3, "<string>:3: workflow 'w': unknown config key 'max_attempt' (did you mean 'max_attempts'?)")],
        id="unknown-config-key",
    ),
    pytest.param(
        NODE_A + "    inputs:\n      - name: i\n        refrence: inputs.x\n",
        None,
        [(7, "<string>:7: workflow 'w', node 'a': unknown key 'refrence' (did you mean 'reference'?)")],
        id="unknown-input-key",
    ),
    pytest.param(
        "name: w\ncolour: red\nnodes: []\n",
        None,
        [(2, "<string>:2: workflow 'w': unknown key 'colour'")],
        id="unknown-key-no-suggestion",
    ),
    pytest.param(
        "name: w\nconfig:\n  retry_strategy: !Random {}\nnodes: []\n",
        None,
        [
            (
                3,
                "<string>:3: invalid YAML (column 19): unsupported YAML tag '!Random' "
                "(allowed: !Immediate, !Linear, !Exponential)",
            )
        ],
        id="unknown-tag",
    ),
    pytest.param(
        "name: w\nconfig:\n  retry_strategy: !Linear 3\nnodes: []\n",
        None,
        [(3, "<string>:3: invalid YAML (column 19): tag '!Linear' takes a mapping of parameters")],
        id="tag-on-a-scalar",
    ),
]


@pytest.mark.parametrize(("text", "actions", "expected"), PROBLEMS)
def test_problem(text: str, actions: list[str] | None, expected: list[tuple[int | None, str]]) -> None:
    assert _problems(text, actions=actions) == expected


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: w\nnodes: !!python/object:os.system {}\n", 2),
        ("name: !!python/name:os.system ''\nnodes: []\n", 1),
        ("name: w\nnodes:\n  - !!python/object/apply:os.system ['echo hacked']\n", 3),
    ],
    ids=["python-object", "python-name", "python-apply"],
)
def test_python_tags_are_refused_as_problems(text: str, line: int) -> None:
    ((found_line, message),) = _problems(text)
    assert found_line == line
    assert "unsupported YAML tag" in message
    assert "python/" in message


def test_python_tag_is_named_as_written() -> None:
    assert _problems("name: w\nnodes: !!python/object:os.system {}\n") == [
        (
            2,
            "<string>:2: invalid YAML (column 8): unsupported YAML tag '!!python/object:os.system' "
            "(allowed: !Immediate, !Linear, !Exponential)",
        )
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            NODE_A + "    action: y\n",
            "<string>:5: workflow 'w', node 'a': duplicate key 'action' (first at line 4)",
        ),
        (
            "name: w\ndescription: a\ndescription: b\nnodes: []\n",
            "<string>:3: workflow 'w': duplicate key 'description' (first at line 2)",
        ),
        (
            "name: w\nconfig:\n  max_attempts: 2\n  max_attempts: 3\nnodes: []\n",
            "<string>:4: workflow 'w': duplicate key 'max_attempts' (first at line 3)",
        ),
        (
            NODE_A + "    inputs:\n      - name: i\n        value: 1\n        value: 2\n",
            "<string>:8: workflow 'w', node 'a': duplicate key 'value' (first at line 7)",
        ),
    ],
    ids=["node-key", "workflow-key", "config-key", "input-key"],
)
def test_duplicate_yaml_keys(text: str, expected: str) -> None:
    assert _problems(text) == [(int(expected.split(":")[1]), expected)]


def test_unprintable_character_is_a_problem() -> None:
    ((line, message),) = _problems("name: w\nnodes: []\ndescription: \x00\n")
    assert line == 3
    assert message.startswith("<string>:3: invalid YAML")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "kind"),
    [("0", "int"), ("[]", "a list"), ("''", "text"), ("false", "bool")],
    ids=["zero", "empty-list", "empty-text", "false"],
)
def test_config_must_be_a_mapping(value: str, kind: str) -> None:
    assert _problems(f"name: w\nconfig: {value}\nnodes: []\n") == [
        (2, f"<string>:2: workflow 'w': must be a mapping, got {kind}")
    ]


# --- several problems at once -----------------------------------------------------------------

ETL_WITH_PROBLEMS = _yaml("""
    name: etl
    nodes:
      - id: load
        action: read_csv
        dependecies: []
      - id: clean
        action: drop_nulls
        dependencies: [lod]
      - id: clean
        action: dedupe
      - id: report
        action: render
        timeout: -1
      - id: summary
        action: render
        inputs:
          - {name: table, reference: nowhere.rows}
    config:
      max_attempts: 0
    """)


def test_every_problem_is_reported_together_sorted_by_line() -> None:
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(ETL_WITH_PROBLEMS, actions=["read_csv", "drop_nulls", "render"])
    expected = [
        "<string>:5: workflow 'etl', node 'load': unknown key 'dependecies' (did you mean 'dependencies'?)",
        "<string>:8: workflow 'etl', node 'clean': dependency 'lod' is not a node "
        "(known: load, clean, report, summary)",
        "<string>:9: workflow 'etl', node 'clean': duplicate node id 'clean' (first defined as node 2)",
        "<string>:10: workflow 'etl', node 'clean': unknown action 'dedupe' "
        "(registered: drop_nulls, read_csv, render)",
        "<string>:13: workflow 'etl', node 'report': key 'timeout': input should be greater than 0 (got -1)",
        "<string>:17: workflow 'etl', node 'summary': input 'table' references unknown node 'nowhere' "
        "(known: load, clean, report, summary)",
        "<string>:19: workflow 'etl': config key 'max_attempts': input should be greater than or equal to 1 "
        "(got 0)",
    ]
    assert [str(problem) for problem in caught.value.problems] == expected
    assert str(caught.value) == "\n".join(expected)
    assert [problem.line for problem in caught.value.problems] == [5, 8, 9, 10, 13, 17, 19]
    assert {problem.workflow for problem in caught.value.problems} == {"etl"}


def test_error_is_a_value_error_and_a_dagger_error() -> None:
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(NODE_A + "    dependencies: [zz]\n")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, DaggerError)
    assert caught.value.problems == [
        Problem("<string>", 5, "w", "a", "dependency 'zz' is not a node (known: a)")
    ]


# --- sources ----------------------------------------------------------------------------------

CHAIN = "name: chain\nnodes:\n  - {id: a, action: x}\n  - {id: b, action: y, dependencies: [a]}\n"


def test_load_from_path_str_path_and_text(tmp_path: Path) -> None:
    file = tmp_path / "chain.yaml"
    file.write_text(CHAIN, encoding="utf-8")
    from_path = load_workflow(file)
    assert load_workflow(str(file)) == from_path
    assert load_workflow(CHAIN) == from_path
    assert from_path.topological_order() == ["a", "b"]


def test_problems_name_the_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.yml"
    file.write_text(NODE_A + "    dependencies: [zz]\n", encoding="utf-8")
    for source in (file, str(file)):
        with pytest.raises(
            WorkflowSpecError, match=r"^" + f"{file}:5: workflow 'w', node 'a': dependency 'zz'"
        ):
            load_workflow(source)


@pytest.mark.parametrize("make_source", [str, Path], ids=["str", "Path"])
def test_missing_file(tmp_path: Path, make_source: type) -> None:
    missing = tmp_path / "x.yaml"
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(make_source(missing))
    assert str(caught.value) == f"{missing}: file not found"
    assert caught.value.problems == [Problem(str(missing), None, None, None, "file not found")]


def test_missing_relative_yaml_path() -> None:
    with pytest.raises(WorkflowSpecError, match=r"^x\.yaml: file not found$"):
        load_workflow("x.yaml")


def test_folder_given_as_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowSpecError, match=r"cannot read: "):
        load_workflow(tmp_path)


def test_undecodable_file(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes("name: caf\xe9\nnodes: []\n".encode("latin-1"))
    with pytest.raises(WorkflowSpecError, match=r"^" + f"{file}: cannot read: "):
        load_workflow(file)


def test_parse_workflow_with_path_offset_and_default_name() -> None:
    with pytest.raises(WorkflowSpecError) as caught:
        parse_workflow(
            "nodes:\n  - {id: a, action: x, dependencies: [b]}\n",
            path="nb.ipynb",
            line_offset=10,
            default_name="cell",
        )
    assert (
        str(caught.value) == "nb.ipynb:12: workflow 'cell', node 'a': dependency 'b' is not a node (known: a)"
    )
    assert parse_workflow("name: own\nnodes: []\n", default_name="cell").name == "own"


# --- folders ----------------------------------------------------------------------------------


def test_load_workflows_sorted_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("name: second\nnodes: []\n", encoding="utf-8")
    (tmp_path / "a.yaml").write_text(CHAIN, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not: a workflow\n", encoding="utf-8")
    (tmp_path / "sub.yaml").mkdir()
    assert [spec.name for spec in load_workflows(tmp_path)] == ["chain", "second"]
    assert [spec.name for spec in load_workflows(str(tmp_path))] == ["chain", "second"]


def test_load_workflows_reports_every_file_together(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NODE_A + "    dependencies: [zz]\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text(CHAIN, encoding="utf-8")
    (tmp_path / "c.yml").write_text(
        "name: c\nnodes:\n  - {id: q, action: x, colour: red}\n", encoding="utf-8"
    )
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflows(tmp_path, actions=["x", "y"])
    assert str(caught.value).splitlines() == [
        f"{tmp_path / 'a.yaml'}:5: workflow 'w', node 'a': dependency 'zz' is not a node (known: a)",
        f"{tmp_path / 'c.yml'}:3: workflow 'c', node 'q': unknown key 'colour'",
    ]


def test_load_workflows_of_the_resources(resources: Path) -> None:
    names = [spec.name for spec in load_workflows(resources)]
    assert {"chain_3", "diamond_4", "empty_nodes", "config_exponential", "rust_legacy"} <= set(names)


def test_load_workflows_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(WorkflowSpecError, match=r"^" + f"{tmp_path / 'nope'}: not a folder$"):
        load_workflows(tmp_path / "nope")


def test_load_workflows_of_an_empty_folder(tmp_path: Path) -> None:
    assert load_workflows(tmp_path) == []


# --- round trip -------------------------------------------------------------------------------


def test_resources_round_trip_through_to_yaml(resources: Path) -> None:
    for name in ("chain_3", "diamond_4", "empty_nodes", "config_exponential", "rust_legacy"):
        spec = load_workflow(resources / f"{name}.yaml")
        assert load_workflow(spec.to_yaml()) == spec


def _with_literal(literal: str) -> WorkflowSpec:
    return load_workflow(
        f"name: w\nnodes:\n  - id: a\n    action: x\n    inputs: [{{name: i, value: {literal}}}]\n"
    )


def test_literal_null_round_trips() -> None:
    spec = _with_literal("null")
    assert load_workflow(spec.to_yaml()) == spec


@pytest.mark.parametrize("literal", [".inf", "-.inf", "2001-12-14", "2001-12-14 21:59:43", "[.inf, 1]"])
def test_yaml_only_literals_round_trip(literal: str) -> None:
    spec = _with_literal(literal)
    assert load_workflow(spec.to_yaml()) == spec


# --- the user guide's examples ------------------------------------------------------------------

GUIDE = Path(__file__).parents[2] / "docs" / "workflow-format.md"


def _guide_blocks(language: str) -> list[str]:
    blocks = GUIDE.read_text(encoding="utf-8").split("```")
    return [block.split("\n", 1)[1] for block in blocks[1::2] if block.startswith(language + "\n")]


def test_guide_worked_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dagger_nb.cli import main

    example = _guide_blocks("yaml")[0]
    file = _write_file(tmp_path / "etl.yaml", example)
    spec = load_workflow(
        file, actions={"read_csv", "drop_bad_rows", "total_by", "write_report", "notify_owner"}
    )
    assert spec.topological_order() == ["load", "clean", "by_region", "by_month", "report"]
    assert spec.dependencies("report") == ["by_region", "by_month"]
    assert spec.dependencies("clean") == ["load"]
    assert spec.node("by_month").attempts(spec.config) == 1
    assert spec.node("by_region").attempts(spec.config) == 3
    assert spec.config.retry_strategy.delay(attempt=3) == 2.0
    assert spec.config.on_failure is OnFailure.CONTINUE
    assert main(["validate", str(file)]) == 0
    # The first line is the guide's; the command may add lines after it (the run inputs).
    assert capsys.readouterr().out.startswith(f"{file}: ok: workflow 'etl', 5 nodes\n")


def test_guide_error_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dagger_nb.cli import main

    broken = next(block for block in _guide_blocks("yaml") if "dependecies" in block)
    assert broken == ETL_WITH_PROBLEMS
    shown = next(block for block in _guide_blocks("text") if "etl.yaml:19:" in block)
    file = _write_file(tmp_path / "etl.yaml", broken)
    assert main(["validate", str(file)]) == 1
    reported = capsys.readouterr().err.replace(str(file), "etl.yaml")
    assert reported == "".join(line + "\n" for line in shown.splitlines() if "unknown action" not in line)
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(file, actions=["read_csv", "drop_nulls", "render"])
    assert str(caught.value).replace(str(file), "etl.yaml") + "\n" == shown


def test_guide_code_built_workflow_round_trips() -> None:
    code = next(block for block in _guide_blocks("python") if "to_yaml" in block)
    namespace: dict[str, object] = {}
    exec(code.replace("print(spec.to_yaml())", ""), namespace)
    spec = namespace["spec"]
    assert isinstance(spec, WorkflowSpec)
    assert load_workflow(spec.to_yaml()) == spec


def _write_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
