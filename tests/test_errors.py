"""Each specific error is raised where it belongs, is still a DaggerError (and the builtin whose meaning
fits), and says what went wrong; describe_error is the one way an exception is shown to people."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dagger_nb import cli
from dagger_nb.cache import Cache, RunCache
from dagger_nb.dag.actions import ActionRegistry, NodeContext
from dagger_nb.dag.loader import parse_workflow
from dagger_nb.errors import (
    ActionDefinitionError,
    ActionError,
    CacheFormatError,
    CommandLineError,
    DaggerError,
    GraphvizError,
    GraphvizNotFound,
    NodeNotFound,
    NodeTimeout,
    ReadOnlyInputs,
    TaskNotFound,
    describe_error,
)
from dagger_nb.graph import render_svg

WORKFLOW = """
name: etl
nodes:
  - {id: load, action: noop}
  - {id: clean, action: noop, dependencies: [load]}
"""


def _context() -> NodeContext:
    return NodeContext("n", "w", "r", 1, {}, Cache())


def _unset_cache() -> Cache:
    cache = Cache()
    cache.insert("ns", "key", {1, 2})
    return cache


CASES: list[tuple[str, Callable[[], object], type[DaggerError], type[Exception], str]] = [
    ("node-not-found", lambda: parse_workflow(WORKFLOW).node("train"), NodeNotFound, KeyError,
     "workflow 'etl' has no node 'train' (known: load, clean)"),
    ("action-empty-name", lambda: ActionRegistry().register("", print), ActionDefinitionError, ValueError,
     "action name must be a non-empty string, got ''"),
    ("action-not-callable", lambda: ActionRegistry().register("x", 3), ActionDefinitionError, ValueError,
     "action 'x' must be callable, got int"),
    ("action-bad-cache-flag", lambda: ActionRegistry().register("x", print, cache=1), ActionDefinitionError,
     ValueError, "action 'x': cache must be True or False, got 1"),
    ("context-without-run", lambda: _context().add_node("noop"), ActionError, RuntimeError,
     "this context is not attached to a run: it cannot add nodes or ask a person"),
    ("cache-json-invalid", lambda: Cache.from_json("{"), CacheFormatError, ValueError,
     "cache JSON is invalid: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ("cache-json-not-object", lambda: Cache.from_json("[]"), CacheFormatError, ValueError,
     "cache JSON must be an object of namespaces"),
    ("cache-json-namespace", lambda: Cache.from_json('{"a": 1}'), CacheFormatError, ValueError,
     "cache JSON namespace 'a' must be an object of keys"),
    ("cache-json-entry", lambda: Cache.from_json('{"a": {"k": 1}}'), CacheFormatError, ValueError,
     "cache JSON entry 'a.k' must be an object with a 'value'"),
    ("cache-value-not-json", lambda: _unset_cache().to_json(), CacheFormatError, ValueError,
     "cache value 'ns.key' of type set is not JSON-serialisable: Object of type set is not JSON serializable"),
    ("run-inputs-read-only", lambda: RunCache(Cache(), {"x": 1}).insert("inputs", "x", 2), ReadOnlyInputs,
     TypeError, "cannot write 'inputs.x': a run's inputs are read-only (pass them as inputs=...)"),
    ("cli-bad-input", lambda: cli._parse_input("no-equals"), CommandLineError, ValueError,
     "--input 'no-equals' must look like KEY=VALUE"),
    ("cli-missing-actions-file", lambda: cli._import_actions("missing/actions.py"), CommandLineError,
     ValueError, "actions file 'missing/actions.py' not found"),
    ("cli-missing-actions-module", lambda: cli._import_actions("no_such_actions_module"), CommandLineError,
     ValueError, "cannot import actions module 'no_such_actions_module': No module named 'no_such_actions_module'"),
]


@pytest.mark.parametrize(("call", "error", "builtin", "message"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_the_specific_error_is_raised_with_its_message(
    call: Callable[[], object], error: type[DaggerError], builtin: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$") as caught:
        call()
    assert isinstance(caught.value, DaggerError) and isinstance(caught.value, builtin)


def test_an_actions_file_that_fails_to_import_is_described(tmp_path: Path) -> None:
    broken = tmp_path / "broken_actions.py"
    broken.write_text("raise ValueError('no config')\n")
    with pytest.raises(CommandLineError, match=f"^importing actions from '{re.escape(str(broken))}' failed: "
                                               "ValueError: no config$"):
        cli._import_actions(str(broken))


def test_the_cli_prints_a_command_line_error_and_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    workflow = tmp_path / "etl.yaml"
    workflow.write_text(WORKFLOW)
    assert cli.main(["graph", str(workflow), "--output", str(tmp_path / "etl.png")]) == 1
    assert capsys.readouterr().err == (
        f"error: cannot write '{tmp_path / 'etl.png'}': the output must end in .svg or .dot\n"
    )


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_a_graph_graphviz_cannot_render_raises_graphviz_error() -> None:
    with pytest.raises(GraphvizError, match=r"^Graphviz could not render the graph: .*syntax error") as caught:
        render_svg("digraph { a -> }")
    assert isinstance(caught.value, RuntimeError) and "syntax error" in caught.value.detail


def test_graphviz_not_found_is_a_graphviz_error_with_its_own_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GraphvizError, match=r"^Graphviz's 'dot' program was not found on PATH; install it"):
        render_svg("digraph { a }")
    assert issubclass(GraphvizNotFound, GraphvizError)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (NodeTimeout("train", 2, attempt=3), "node 'train' timed out after 2s (attempt 3)"),
        (NodeTimeout("train", 0.05), "node 'train' timed out after 0.05s"),
    ],
    ids=["with-attempt", "without-attempt"],
)
def test_node_timeout_names_the_node(error: NodeTimeout, message: str) -> None:
    assert str(error) == message and isinstance(error, TimeoutError) and error.node == "train"


@pytest.mark.parametrize(
    ("exception", "text"),
    [
        (ValueError("bad value"), "ValueError: bad value"),
        (KeyError(), "KeyError"),
        (TaskNotFound("t1"), "unknown task 't1'"),
        (OSError("name \udcff"), "OSError: name \\udcff"),
    ],
    ids=["builtin", "empty-message", "ours-as-is", "unencodable"],
)
def test_describe_error(exception: BaseException, text: str) -> None:
    assert describe_error(exception) == text
