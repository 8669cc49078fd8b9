"""Hostile and careless YAML: every case is one clean WorkflowSpecError with a line, quickly.

And whatever does load can be dumped, pickled and stored as JSON. Durations are CPU
time of this process: the machine running the tests may be busy with other work.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagger_nb import ActionRegistry, DagExecutor, cli
from dagger_nb.dag import _yaml
from dagger_nb.dag.loader import (
    MAX_DEPTH,
    MAX_PROBLEMS,
    load_workflow,
    parse_workflow,
)
from dagger_nb.dag.spec import WorkflowSpec
from dagger_nb.errors import WorkflowSpecError

NODE = "name: w\nnodes:\n  - id: a\n    action: step\n"
VALUE = NODE + "    inputs:\n      - name: v\n        value: "


def _laughs(levels: int) -> str:
    text = 'name: w\nlol0: &lol0 ["lol"]\n'
    for level in range(1, levels + 1):
        text += f"lol{level}: &lol{level} [" + ", ".join([f"*lol{level - 1}"] * 9) + "]\n"
    return text + f"nodes:\n  - id: a\n    action: step\n    inputs:\n      - {{name: v, value: *lol{levels}}}\n"


def _typos(count: int) -> str:
    nodes = "".join(f"  - {{id: n{i}, action: step, dependencies: [n{i}x]}}\n" for i in range(count))
    return "name: typos\nnodes:\n" + nodes


HOSTILE = [
    pytest.param(_laughs(9), 7, "YAML aliases expand this value past 100,000 extra values", id="billion-laughs"),
    pytest.param(_laughs(6), 7, "YAML aliases expand this value past", id="million-laughs"),
    pytest.param(VALUE + "&r [1, *r]\n", 7, "a YAML alias refers to a value that contains it", id="recursive-list"),
    pytest.param(VALUE + "&r {a: *r}\n", 7, "a YAML alias refers to a value that contains it", id="recursive-map"),
    pytest.param(NODE + "    inputs: &i [{name: x, value: *i}]\n", 5, "recursive alias", id="recursive-inputs"),
    pytest.param(VALUE + "[" * 300 + "]" * 300 + "\n", 7, "nested more than 100 levels deep", id="depth-300"),
    pytest.param(VALUE + "[" * 2000 + "]" * 2000 + "\n", 7, "nested more than 100 levels deep", id="depth-2000"),
    pytest.param(
        "name: w\ndeep: &d " + "[" * 60 + "]" * 60 + "\nnodes:\n  - id: a\n    action: step\n    inputs:\n"
        "      - {name: v, value: " + "[" * 40 + "*d" + "]" * 40 + "}\n",
        None,
        "nested more than 100 levels deep",
        id="depth-through-alias",
    ),
    pytest.param(NODE.replace("id: a", 'id: "a\\udc00"'), 3, "lone surrogate '\\udc00'", id="surrogate-id"),
    pytest.param(NODE + '    description: "\\ud83d\\ude00"\n', 5, "lone surrogate", id="surrogate-pair-escapes"),
    pytest.param(NODE + '    "\\U0000dc00": 1\n', 5, "lone surrogate", id="surrogate-key"),
    pytest.param(VALUE + "1" + "0" * 400 + "\n", 7, "a number longer than 100 characters (401)", id="int-400-digits"),
    pytest.param(VALUE + "9" * 5000 + "\n", 7, "a number longer than 100 characters (5,000)", id="int-5000-digits"),
    pytest.param(
        "name: w\nconfig:\n  max_attempts: 1" + "0" * 400 + "\nnodes: []\n",
        3,
        "a number longer",
        id="max-attempts-10^400",
    ),
    pytest.param(
        NODE + "    timeout: true\n", 5, "key 'timeout': a boolean is not a number (got True)", id="timeout-true"
    ),
    pytest.param(NODE + "    try_count: true\n", 5, "key 'try_count': a boolean is not a number", id="try-count-true"),
    pytest.param(
        "name: w\nconfig: {max_attempts: false}\nnodes: []\n",
        2,
        "config key 'max_attempts': a boolean",
        id="config-false",
    ),
    pytest.param(NODE + "    try_count: 1001\n", 5, "less than or equal to 1000 (got 1001)", id="try-count-bound"),
    pytest.param(
        "name: w\nconfig:\n  max_attempts: 100000000\nnodes: []\n",
        3,
        "less than or equal to 1000",
        id="max-attempts-bound",
    ),
    pytest.param(NODE + "    timeout: .inf\n", 5, "key 'timeout': input should be a finite number", id="timeout-inf"),
    pytest.param(NODE + '    timeout: "1e400"\n', 5, "input should be a finite number", id="timeout-1e400-text"),
    pytest.param(NODE + "    timeout: " + "9" * 90 + "\n", 5, "less than or equal to 604800", id="timeout-huge"),
    pytest.param(NODE + "    bad: " + "x" * 10_000 + "\n", 5, "unknown key 'bad'", id="long-value-shortened"),
]


@pytest.mark.parametrize(("text", "line", "message"), HOSTILE)
def test_hostile_yaml_is_one_clean_problem_with_a_line(text: str, line: int | None, message: str) -> None:
    started = time.process_time()
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text)
    assert time.process_time() - started < 1.0
    problems = caught.value.problems
    assert len(problems) == 1, str(caught.value)
    assert message in problems[0].message
    assert problems[0].line is not None
    if line is not None:
        assert problems[0].line == line
    assert len(str(caught.value)) < 300  # bounded, whatever the size of the offending value


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (NODE + "    description: a\udc00b\n", 5, "invalid YAML: character U+DC00 is not allowed"),
        (NODE + "    description: a\x00b\n", 5, "invalid YAML: character U+0000 is not allowed"),
    ],
    ids=["raw-surrogate-in-text", "nul"],
)
def test_unencodable_characters_in_the_text_are_a_problem_with_a_line(text: str, line: int, message: str) -> None:
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text)
    assert [(problem.line, problem.message) for problem in caught.value.problems] == [(line, message)]


def test_huge_names_make_short_messages() -> None:
    text = f"name: {'w' * 5000}\nnodes:\n  - id: {'a' * 5000}\n    action: step\n    dependencies: [{'b' * 5000}]\n"
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text)
    (problem,) = caught.value.problems
    assert problem.line == 5
    assert problem.message.startswith("dependency 'bbbb") and problem.message.endswith(" characters)")
    assert len(str(caught.value)) < 800


def test_many_typos_are_bounded_and_counted() -> None:
    started = time.process_time()
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(_typos(5000))
    assert time.process_time() - started < 2.0
    problems = caught.value.problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0].message == (
        "dependency 'n0x' is not a node (did you mean 'n0'? known: n0, n1, n2, n3, n4, n5 and 4994 more)"
    )
    assert problems[0].line == 3
    assert problems[-1].message == f"{5000 - MAX_PROBLEMS} more problems not shown (fix these first)"
    assert len(str(caught.value)) < 10_000


def test_did_you_mean_is_worked_out_for_a_few_names_only() -> None:
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(_typos(100))
    suggested = [problem for problem in caught.value.problems if "did you mean" in problem.message]
    assert 0 < len(suggested) <= 10


def test_aliases_within_the_limit_load_and_share_their_value() -> None:
    spec = load_workflow(
        "name: w\nnodes:\n"
        "  - {id: a, action: step, inputs: [{name: v, value: &s {rows: [1, 2, 3]}}]}\n"
        "  - {id: b, action: step, inputs: [{name: v, value: *s}]}\n"
    )
    assert spec.nodes[1].inputs[0].value == {"rows": [1, 2, 3]}


def test_the_alias_limit_counts_expanded_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # Four levels of nine aliases: 9**4 = 6,561 values, under the default limit and over a lowered one.
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(_laughs(4))
    assert [problem.message for problem in caught.value.problems] == [f"unknown key 'lol{level}'" for level in range(5)]
    monkeypatch.setattr(_yaml, "MAX_ALIAS_EXPANSION", 1000)
    with pytest.raises(WorkflowSpecError, match="past 1,000 extra values"):
        load_workflow(_laughs(4))


def test_a_document_over_the_size_limit_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_yaml, "MAX_DOCUMENT_CHARS", 100)
    text = NODE + "    description: " + "x" * 200 + "\n"
    with pytest.raises(WorkflowSpecError) as caught:
        parse_workflow(text, path="big.yaml")
    (problem,) = caught.value.problems
    assert (problem.path, problem.line) == ("big.yaml", 5)
    assert problem.message.startswith("the document is longer than 100 characters")


def test_depth_at_the_limit_loads() -> None:
    depth = MAX_DEPTH - 6  # the workflow's own levels: document, nodes, node, inputs, input, value
    spec = load_workflow(VALUE + "[" * depth + "]" * depth + "\n")
    _assert_storable(spec)


def test_the_pure_python_parser_gives_the_same_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [_laughs(9), VALUE + "&r [1, *r]\n", NODE + "    timeout: true\n", NODE + "  oops: [\n"]
    with_libyaml = [_problems(text) for text in texts]
    monkeypatch.setattr(_yaml, "FastSpecLoader", None)
    assert [_problems(text) for text in texts] == with_libyaml


def _problems(text: str) -> list[str]:
    with pytest.raises(WorkflowSpecError) as caught:
        load_workflow(text)
    return [str(problem) for problem in caught.value.problems]


# --- what loads can be stored ------------------------------------------------------------------

LOADABLE = [
    pytest.param("!!binary /w==", id="binary-not-utf8"),
    pytest.param("2024-02-29", id="date"),
    pytest.param("2024-02-29T12:00:00+01:00", id="datetime"),
    pytest.param("!!set {a, b}", id="set"),
    pytest.param("!!omap [{a: 1}, {b: 2}]", id="omap"),
    pytest.param(".inf", id="infinity"),
    pytest.param(".nan", id="nan"),
    pytest.param("{1: a, 2.5: b, null: c, true: d}", id="non-text-keys"),
    pytest.param("9" * 100, id="int-100-digits"),
    pytest.param('"\\U0001F600 \\u00e9 \\x00"', id="escapes"),
    pytest.param("[" * 90 + "]" * 90, id="deep-90"),
]


@pytest.mark.parametrize("value", LOADABLE)
def test_anything_that_loads_can_be_dumped_pickled_and_stored(value: str) -> None:
    spec = load_workflow(VALUE + value + "\n")
    _assert_storable(spec)


def test_shared_aliases_can_be_dumped() -> None:
    spec = load_workflow(
        "name: w\nnodes:\n  - {id: a, action: step, inputs: [{name: v, value: &s [[1], [2]]}, {name: u, value: *s}]}\n"
    )
    _assert_storable(spec)


@pytest.mark.anyio
@pytest.mark.parametrize("value", LOADABLE)
async def test_anything_that_loads_can_be_run_and_stored(value: str, tmp_path: Path) -> None:
    registry = ActionRegistry()
    registry.register("step", lambda v: None)
    executor = DagExecutor(registry, db=tmp_path / "runs.db")
    executor.load_yaml(VALUE + value + "\n")
    report = await executor.run("w")
    assert report.success, report.outcomes["a"].error


def _assert_storable(spec: WorkflowSpec) -> None:
    text = spec.to_yaml()
    assert load_workflow(text).to_yaml() == text
    assert pickle.loads(pickle.dumps(spec)).to_yaml() == text
    stored = spec.model_dump_json(exclude_unset=True)  # as the run store writes it
    WorkflowSpec.model_validate_json(stored)
    json.loads(stored)


# --- the command line --------------------------------------------------------------------------

RESOURCES = Path(__file__).parent.parent / "resources" / "hostile"


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        yield err


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        ("alias_bomb.yaml", 8, "YAML aliases expand this value past 100,000 extra values"),
        ("recursive_alias.yaml", 8, "a YAML alias refers to a value that contains it"),
        ("lone_surrogate.yaml", 4, "lone surrogate"),
        ("many_typos.yaml", 3, "dependency 'n0x' is not a node"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_refuses_hostile_files_quickly_with_a_line(
    command: str, name: str, line: int, message: str, tmp_path: Path
) -> None:
    path = RESOURCES / name
    if name == "many_typos.yaml":
        path = tmp_path / name
        path.write_text(_typos(5000), encoding="utf-8")
    actions = tmp_path / "actions.py"
    actions.write_text("import dagger_nb\n\n@dagger_nb.action\ndef step(v=None):\n    return v\n")
    argv = [command, str(path)] + (["--actions", str(actions)] if command == "run" else [])
    started = time.process_time()
    with _captured() as err:
        code = cli.main(argv)
    assert time.process_time() - started < 1.0
    assert code == 1
    output = err.getvalue()
    assert f"{path}:{line}:" in output and message in output
    assert "Traceback" not in output
    assert len(output) < 10_000
