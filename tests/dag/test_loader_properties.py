"""Properties of the loader: nothing but WorkflowSpecError escapes, valid DAGs round-trip."""

from __future__ import annotations

import pickle
import string
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yaml.reader import Reader

from dagger_nb.dag.loader import load_workflow, parse_workflow
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
from dagger_nb.errors import WorkflowSpecError

# Deterministic and quick: the same examples on every run, no per-example deadline.
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Generating whole workflows is the expensive part; fewer examples keep the file under ~15 s.
PROPERTY_SLOW = settings(PROPERTY, max_examples=75)

NODE_KEYS = [*NodeSpec.model_fields, "dependecies", "id ", "type"]
CONFIG_KEYS = [*DagConfig.model_fields, "max_attempt", "retry"]
WORKFLOW_KEYS = [*WorkflowSpec.model_fields, "colour"]


def _load_or_spec_error(text: str) -> None:
    try:
        spec = load_workflow(text)
    except WorkflowSpecError as error:
        assert error.problems, "a WorkflowSpecError must carry at least one problem"
        assert str(error) == "\n".join(str(problem) for problem in error.problems)
    else:
        assert isinstance(spec, WorkflowSpec)


@pytest.mark.parametrize(
    ("text", "line", "got"),
    # "!" is YAML's non-specific tag: libyaml reads the empty value as text, the pure-Python parser as null.
    [("~", 1, "nothing"), ("null", 1, "nothing"), ("---\n", 2, "nothing"), ("!", 1, None), ("--- !\n", 1, None)],
)
def test_null_document_is_a_problem(text: str, line: int, got: str | None) -> None:
    # Found by the properties below: these once raised a WorkflowSpecError without any problem.
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text)
    (problem,) = caught.value.problems
    assert (problem.path, problem.line, problem.workflow, problem.node) == ("<string>", line, None, None)
    assert problem.message.startswith("a workflow must be a mapping with 'name' and 'nodes', got ")
    if got is not None:
        assert problem.message.endswith(f"got {got}")


# --- arbitrary input --------------------------------------------------------------------------

printable = st.characters(exclude_categories=["Cs"]).filter(
    lambda char: not Reader.NON_PRINTABLE.search(char)
)
yaml_alphabet = st.sampled_from([*":-[]{},'\"!&*#|>%@`? \n\t.0123456789abinoprstuxy_", "!!", "<<"])


@PROPERTY
@given(st.text(printable, max_size=200))
def test_printable_text_raises_only_spec_errors(text: str) -> None:
    _load_or_spec_error(text)


@PROPERTY
@given(st.lists(yaml_alphabet, max_size=80).map("".join))
def test_yaml_punctuation_raises_only_spec_errors(text: str) -> None:
    _load_or_spec_error(text)


@PROPERTY
@given(st.text(max_size=100))
@example("name: w\x00\nnodes: []\n")
@example("name: w\nnodes: []\ndescription: \ufffe\n")
def test_any_text_raises_only_spec_errors(text: str) -> None:
    _load_or_spec_error(text)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats()
    | st.text(printable, max_size=20)
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(printable, max_size=8) | st.integers(0, 3), children, max_size=4)
    ),
    max_leaves=12,
)


def _shaped(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    """Mappings mostly made of real keys, with random (often wrong) values."""
    return st.dictionaries(st.sampled_from(keys) | st.text(printable, max_size=6), values, max_size=6)


retry_like = st.one_of(
    st.sampled_from(["Immediate", "Linear", "Exponential", "Sometimes"]),
    st.dictionaries(
        st.sampled_from(["Immediate", "Linear", "Exponential"]),
        _shaped(["delay_secs", "initial_delay_secs", "max_delay_secs", "multiplier"], scalars) | scalars,
        max_size=2,
    ),
)
config_like = _shaped(CONFIG_KEYS, scalars | retry_like)
input_like = _shaped(["name", "reference", "value", "description", "type"], scalars | st.just("a.out"))
node_like = _shaped(
    NODE_KEYS,
    scalars
    | st.sampled_from(["a", "b", "c"])
    | st.lists(st.sampled_from(["a", "b", "c", "zz"]) | scalars, max_size=3)
    | st.lists(input_like, max_size=3)
    | st.lists(_shaped(["name", "description"], scalars), max_size=2),
)
workflow_like = _shaped(
    WORKFLOW_KEYS, scalars | st.lists(node_like, max_size=4) | config_like
) | st.fixed_dictionaries(
    {"name": st.just("w"), "nodes": st.lists(node_like, max_size=4)}, optional={"config": config_like}
)


@PROPERTY
@given(json_like)
def test_arbitrary_yaml_documents_raise_only_spec_errors(document: Any) -> None:
    _load_or_spec_error(yaml.safe_dump(document))


@PROPERTY_SLOW
@given(workflow_like)
def test_workflow_shaped_documents_raise_only_spec_errors(document: dict[Any, Any]) -> None:
    text = yaml.safe_dump(document)
    _load_or_spec_error(text)
    # The same text inside a notebook cell: lines shift by the offset, the name defaults.
    try:
        parse_workflow(text, path="cell", line_offset=7, default_name="cell")
    except WorkflowSpecError as error:
        assert all(problem.line is None or problem.line > 7 for problem in error.problems)


# --- hostile structures ------------------------------------------------------------------------

anchored = st.sampled_from(["&a", "&b", ""])
hostile_scalar = st.one_of(
    st.sampled_from(["*a", "*b", "true", "false", ".inf", "-.nan", "!!binary /w==", "2024-01-01", '"\\udc00"',
                     '"\\ud83d\\ude00"', "null", "~", "1e400", "0x_ff"]),
    st.integers(0, 200).map(lambda n: "9" * n),
)


@st.composite
def hostile_values(draw: st.DrawFn, depth: int = 0) -> str:
    """YAML flow text mixing anchors, aliases (often to themselves), deep nesting and odd scalars."""
    if depth > 3 or draw(st.booleans()):
        return draw(hostile_scalar)
    anchor = draw(anchored)
    nesting = draw(st.sampled_from([1, 1, 1, 50, 120]))
    items = draw(st.lists(hostile_values(depth + 1), max_size=4))
    inner = f"{anchor} [{', '.join(items)}]"
    return "[" * (nesting - 1) + inner + "]" * (nesting - 1)


numeric_keys = st.sampled_from(["timeout", "try_count", "onfailure", "instructions", "dependencies"])


@PROPERTY_SLOW
@given(hostile_values(), hostile_values(), numeric_keys, hostile_scalar)
def test_hostile_structures_raise_one_clean_error_or_load_storably(
    value: str, other: str, key: str, scalar: str
) -> None:
    text = (
        f"name: w\nshared: {other}\nconfig: {{max_attempts: {scalar}}}\nnodes:\n"
        f"  - {{id: a, action: step, {key}: {scalar}, inputs: [{{name: v, value: {value}}}]}}\n"
    )
    try:
        spec = load_workflow(text)
    except WorkflowSpecError as error:
        assert error.problems
        assert all(problem.line is not None for problem in error.problems), str(error)
        assert len(str(error)) < 20_000
    else:
        # Whatever loads can be dumped, pickled and stored as JSON.
        assert load_workflow(spec.to_yaml()).to_yaml() == spec.to_yaml()
        pickle.loads(pickle.dumps(spec))
        WorkflowSpec.model_validate_json(spec.model_dump_json(exclude_unset=True))


# --- valid DAGs round-trip --------------------------------------------------------------------

identifiers = st.text(string.ascii_lowercase + string.digits + "_", min_size=1, max_size=6).filter(
    lambda name: name != "inputs"
)
texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=20)
optional_texts = st.none() | texts
literals = st.recursive(
    # Any YAML literal except NaN (NaN != NaN, so equality cannot hold).
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False) | st.dates() | texts,
    lambda children: (
        st.lists(children | st.none(), max_size=3) | st.dictionaries(identifiers, children, max_size=3)
    ),
    max_leaves=6,
)
retry_strategies = st.one_of(
    st.just(RetryStrategy(kind="immediate")),
    st.builds(RetryStrategy, kind=st.just("linear"), delay_secs=st.floats(0, 600)),
    st.builds(
        RetryStrategy,
        kind=st.just("exponential"),
        initial_delay_secs=st.floats(0, 60),
        max_delay_secs=st.floats(0, 3600),
        multiplier=st.floats(1, 10),
    ),
)
configs = st.builds(
    DagConfig,
    max_attempts=st.integers(1, 10),
    on_failure=st.sampled_from(OnFailure),
    timeout_seconds=st.none() | st.floats(0, 86400, exclude_min=True),
    max_iterations=st.integers(1, 1000),
    retry_strategy=retry_strategies,
    enable_parallel_execution=st.booleans(),
    max_parallel_nodes=st.integers(1, 64),
    review_frequency=st.none() | st.integers(1, 100),
    human_wait_minutes=st.none() | st.floats(0, 1e4, exclude_min=True),
    human_timeout_action=st.sampled_from(HumanTimeoutAction),
    max_tokens=st.none() | st.integers(1, 10**6),
    enable_incremental_cache=st.booleans(),
    cache_snapshot_interval=st.floats(0, 1e4, exclude_min=True),
)


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowSpec:
    """A valid workflow: dependencies and references only point at earlier nodes."""
    ids = draw(st.lists(identifiers, max_size=6, unique=True))
    declared: dict[str, list[str]] = {}
    nodes: list[NodeSpec] = []
    for node_id in ids:
        earlier = list(declared)
        outputs = draw(st.lists(identifiers, max_size=3, unique=True))
        names = draw(st.lists(identifiers, max_size=3, unique=True))
        inputs = [draw(_input(name, declared)) for name in names]
        nodes.append(
            NodeSpec(
                id=node_id,
                action=draw(identifiers),
                dependencies=draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True))
                if earlier
                else [],
                inputs=inputs,
                outputs=[OutputSpec(name=name, description=draw(optional_texts)) for name in outputs],
                failure=draw(st.none() | identifiers),
                onfailure=draw(st.booleans()),
                description=draw(optional_texts),
                timeout=draw(st.none() | st.floats(0, 1e5, exclude_min=True)),
                try_count=draw(st.none() | st.integers(1, 10)),
                instructions=draw(optional_texts | st.lists(texts, max_size=3)),
            )
        )
        declared[node_id] = outputs
    return WorkflowSpec(
        name=draw(identifiers),
        description=draw(optional_texts),
        author=draw(optional_texts),
        version=draw(st.none() | st.sampled_from(["1", "1.0", "1.0.0", "0.0.1", "v2"])),
        signature=draw(optional_texts),
        tags=draw(st.lists(texts, max_size=3)),
        instructions=draw(optional_texts | st.lists(texts, max_size=3)),
        config=draw(configs),
        nodes=nodes,
    )


def _input(name: str, declared: dict[str, list[str]]) -> st.SearchStrategy[InputSpec]:
    run_input = identifiers.map(lambda key: InputSpec(name=name, reference=f"inputs.{key}"))
    literal = literals.map(lambda value: InputSpec(name=name, value=value))
    if not declared:
        return run_input | literal

    @st.composite
    def node_output(draw: st.DrawFn) -> InputSpec:
        node_id = draw(st.sampled_from(list(declared)))
        outputs = declared[node_id]
        output = draw(st.sampled_from(outputs)) if outputs else draw(identifiers)
        return InputSpec(name=name, reference=f"{node_id}.{output}", description=draw(optional_texts))

    return run_input | literal | node_output()


@PROPERTY_SLOW
@given(workflows(), st.data())
def test_valid_dags_round_trip(spec: WorkflowSpec, data: st.DataObject) -> None:
    text = spec.to_yaml()
    assert load_workflow(text) == spec
    actions = {node.action for node in spec.nodes}
    loaded = load_workflow(text, actions=actions)
    order = loaded.topological_order()
    assert sorted(order) == sorted(node.id for node in spec.nodes)
    position = {node_id: index for index, node_id in enumerate(order)}
    for node in loaded.nodes:
        assert all(position[dependency] < position[node.id] for dependency in loaded.dependencies(node.id))
    if actions:
        missing = data.draw(st.sampled_from(sorted(actions)), label="unregistered action")
        with pytest.raises(WorkflowSpecError, match=f"unknown action '{missing}'"):
            load_workflow(text, actions=actions - {missing})


def test_punctuation_alphabet_is_printable() -> None:
    # Guard for the strategies above: the generators must not smuggle in unprintable characters.
    assert not Reader.NON_PRINTABLE.search(string.punctuation)
