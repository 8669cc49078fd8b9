"""The ``dagger-nb validate`` and ``dagger-nb graph`` commands: exit codes, messages, no tracebacks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagger_nb.cli import main

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"

SMALL = """\
name: small
nodes:
  - {id: a, action: load, description: Read it}
  - {id: b, action: clean, dependencies: [a]}
"""
BROKEN = """\
name: broken
nodes:
  - id: a
    action: load
    dependecies: [zz]
  - id: b
    action: clean
    dependencies: [zz]
"""
SMALL_DOT = """\
digraph "small" {
  rankdir=LR;
  node [shape=box, style="rounded,filled", fontname="Helvetica", fillcolor="white"];
  graph [label="small", labelloc="t", fontname="Helvetica"];
  "a" [label="a\\naction: load\\nRead it", tooltip="Read it"];
  "b" [label="b\\naction: clean", tooltip="b"];
  "a" -> "b";
}
"""

# Ids, actions and descriptions full of characters that DOT and SVG must escape.
NASTY = r"""name: "nasty <&> \" workflow"
nodes:
  - id: "load \"raw\" <csv> & more"
    action: "read <file> & \"parse\""
    description: "first line\nsecond <b>line</b> & 'quotes' \"double\""
  - id: "x\ny"
    action: "a>b"
    dependencies: ["load \"raw\" <csv> & more"]
  - id: "back\\slash"
    action: "c&d"
    dependencies: ["x\ny"]
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- validate ---------------------------------------------------------------------------------


def test_validate_ok_prints_one_summary_line_per_file(
    capsys: pytest.CaptureFixture[str], resources: Path
) -> None:
    files = [resources / name for name in ("chain_3.yaml", "diamond_4.yaml", "empty_nodes.yaml")]
    code, out, err = _run(capsys, "validate", *map(str, files))
    assert code == 0
    assert out.splitlines() == [
        f"{files[0]}: ok: workflow 'chain_3', 3 nodes",
        "  run inputs: num1 (node1), num2 (node1)",
        f"{files[1]}: ok: workflow 'diamond_4', 4 nodes",
        "  run inputs: path (load)",
        f"{files[2]}: ok: workflow 'empty_nodes', 0 nodes",
        "  run inputs: none",
    ]
    assert err == ""


def test_validate_reports_every_problem_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = _write(tmp_path, "good.yaml", SMALL)
    bad = _write(tmp_path, "bad.yaml", BROKEN)
    code, out, err = _run(capsys, "validate", str(bad), str(good))
    assert code == 1
    assert out.splitlines() == [f"{good}: ok: workflow 'small', 2 nodes", "  run inputs: none"]
    assert err.splitlines() == [
        f"{bad}:5: workflow 'broken', node 'a': unknown key 'dependecies' (did you mean 'dependencies'?)",
        f"{bad}:8: workflow 'broken', node 'b': dependency 'zz' is not a node (known: a, b)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "{path}: file not found"),
        (
            "name: w\nnodes:\n  - {id: a, action: x\n",
            "{path}:4: invalid YAML (column 1): while parsing a flow "
            "mapping expected ',' or '}}', but got '<stream end>'",
        ),
        (
            "name: w\nnodes: !!python/object:os.system {}\n",
            "{path}:2: invalid YAML (column 8): unsupported YAML tag",
        ),
        ("", "{path}: the document is empty; a workflow needs 'name' and 'nodes'"),
        ("just text\n", "{path}:1: a workflow must be a mapping with 'name' and 'nodes', got text"),
    ],
    ids=["missing-file", "bad-yaml", "python-tag", "empty-file", "not-a-mapping"],
)
def test_validate_user_mistakes_give_messages_not_tracebacks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "workflow.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    code, out, err = _run(capsys, "validate", str(path))
    assert code == 1
    assert out == ""
    assert err.startswith(message.format(path=path))
    assert "Traceback" not in err


def test_validate_a_folder_is_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "validate", str(tmp_path))
    assert code == 1
    assert err.startswith(f"{tmp_path}: cannot read: ")


def test_validate_unprintable_character_is_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _write(tmp_path, "nul.yaml", "name: w\x00\nnodes: []\n")
    code, _, err = _run(capsys, "validate", str(path))
    assert code == 1
    assert err.startswith(f"{path}:1: invalid YAML")


# --- graph ------------------------------------------------------------------------------------


def test_graph_prints_dot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, "graph", str(_write(tmp_path, "small.yaml", SMALL)))
    assert (code, out, err) == (0, SMALL_DOT, "")


def test_graph_writes_dot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    output = tmp_path / "small.dot"
    code, out, _ = _run(capsys, "graph", str(_write(tmp_path, "small.yaml", SMALL)), "-o", str(output))
    assert (code, out) == (0, f"wrote {output}\n")
    assert output.read_text(encoding="utf-8") == SMALL_DOT


@needs_dot
def test_graph_writes_svg(capsys: pytest.CaptureFixture[str], resources: Path, tmp_path: Path) -> None:
    output = tmp_path / "diamond.svg"
    code, out, _ = _run(capsys, "graph", str(resources / "diamond_4.yaml"), "--output", str(output))
    assert (code, out) == (0, f"wrote {output}\n")
    root = ElementTree.parse(output).getroot()
    assert root.tag == f"{SVG}svg"
    titles = [title.text for title in root.iter(f"{SVG}title")]
    assert {"load", "by_region", "by_month", "report", "load->by_region", "by_month->report"} <= set(titles)


def test_graph_problems_are_messages(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = _write(tmp_path, "bad.yaml", BROKEN)
    code, out, err = _run(capsys, "graph", str(bad))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"error: {bad}:5: workflow 'broken', node 'a': "
        "unknown key 'dependecies' (did you mean 'dependencies'?)",
        f"{bad}:8: workflow 'broken', node 'b': dependency 'zz' is not a node (known: a, b)",
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("{folder}/missing.yaml",), "error: {folder}/missing.yaml: file not found\n"),
        (
            ("{folder}/small.yaml", "-o", "{folder}/out.png"),
            "error: cannot write '{folder}/out.png': the output must end in .svg or .dot\n",
        ),
    ],
    ids=["missing-file", "bad-output-suffix"],
)
def test_graph_user_mistakes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    _write(tmp_path, "small.yaml", SMALL)
    code, out, err = _run(capsys, "graph", *(argument.format(folder=tmp_path) for argument in arguments))
    assert (code, out, err) == (1, "", message.format(folder=tmp_path))
    assert not (tmp_path / "out.png").exists()


def test_graph_output_into_missing_folder_is_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = _write(tmp_path, "small.yaml", SMALL)
    code, _, err = _run(capsys, "graph", str(source), "-o", str(tmp_path / "no" / "such" / "out.dot"))
    assert code == 1
    assert err.startswith("error: ")


def test_graph_svg_without_graphviz_says_how_to_install(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write(tmp_path, "small.yaml", SMALL)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, out, err = _run(capsys, "graph", str(source), "-o", str(tmp_path / "out.svg"))
    assert (code, out) == (1, "")
    assert err.startswith(
        "error: Graphviz's 'dot' program was not found on PATH; install it with 'apt-get install graphviz'"
    )
    assert not (tmp_path / "out.svg").exists()
    # DOT output never needs Graphviz.
    assert _run(capsys, "graph", str(source))[:2] == (0, SMALL_DOT)


@needs_dot
def test_graph_escapes_quotes_angles_ampersands_and_newlines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = _write(tmp_path, "nasty.yaml", NASTY)
    code, dot, err = _run(capsys, "graph", str(source))
    assert (code, err) == (0, "")
    # Graphviz itself accepts the DOT ...
    rendered = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=False)
    assert rendered.returncode == 0, rendered.stderr.decode()
    assert rendered.stderr == b""
    # ... and the SVG the CLI writes is well-formed XML with the text intact.
    output = tmp_path / "nasty.svg"
    assert _run(capsys, "graph", str(source), "-o", str(output))[0] == 0
    svg = output.read_text(encoding="utf-8")
    assert "&lt;csv&gt;" in svg
    assert "&amp;" in svg
    root = ElementTree.fromstring(svg)
    texts = [text.text for text in root.iter(f"{SVG}text")]
    assert 'load "raw" <csv> & more' in texts
    assert 'action: read <file> & "parse"' in texts
    assert "action: a>b" in texts
    assert "action: c&d" in texts
    assert "first line second <b>line</b> &" in texts and "'quotes' \"double\"" in texts  # wrapped
    assert texts[texts.index('action: read <file> & "parse"') + 3 : texts.index("action: a>b")] == ["x", "y"]
    edges = [title.text for title in root.iter(f"{SVG}title") if title.text and "->" in title.text]
    assert len(edges) == 2


# --- the installed console script ---------------------------------------------------------------


def _console_script() -> list[str]:
    installed = Path(sys.executable).with_name("dagger-nb")
    if installed.exists():
        return [str(installed)]
    found = shutil.which("dagger-nb")
    return [found] if found else [sys.executable, "-m", "dagger_nb.cli"]


def test_console_script(resources: Path, tmp_path: Path) -> None:
    # One process (starting Python is the slow part): a good file, a bad one and a missing one.
    good = resources / "chain_3.yaml"
    bad = _write(tmp_path, "bad.yaml", BROKEN)
    result = subprocess.run(
        [*_console_script(), "validate", str(good), str(bad), str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == f"{good}: ok: workflow 'chain_3', 3 nodes\n  run inputs: num1 (node1), num2 (node1)\n"
    assert result.stderr.splitlines() == [
        f"{bad}:5: workflow 'broken', node 'a': unknown key 'dependecies' (did you mean 'dependencies'?)",
        f"{bad}:8: workflow 'broken', node 'b': dependency 'zz' is not a node (known: a, b)",
        f"{tmp_path / 'missing.yaml'}: file not found",
    ]


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dagger-nb")
    assert "Traceback" not in err


# --- validate --actions, titles and wrapped descriptions -----------------------------------------

ACTIONS = """
import dagger_nb

@dagger_nb.action
def vcli_load(path):
    return path

@dagger_nb.action
def vcli_clean(rows, *, strict=False):
    return rows
"""
USES_ACTIONS = """\
name: uses
nodes:
  - id: load
    action: vcli_load
    inputs: [{name: path, reference: inputs.path}]
  - id: clean
    action: vcli_clean
    inputs: [{name: rows, reference: load.result}, {name: strict, reference: inputs.strict}]
"""


@pytest.fixture
def actions_file(tmp_path: Path) -> Iterator[Path]:
    from dagger_nb import default_registry

    yield _write(tmp_path, "vcli_actions.py", ACTIONS)
    for name in ("vcli_load", "vcli_clean"):
        if name in default_registry:
            default_registry.unregister(name)


def test_validate_with_actions_checks_names_and_lists_run_inputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, actions_file: Path
) -> None:
    good = _write(tmp_path, "uses.yaml", USES_ACTIONS)
    code, out, err = _run(capsys, "validate", str(good), "--actions", str(actions_file))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{good}: ok: workflow 'uses', 2 nodes, actions checked",
        "  run inputs: path (load), strict (clean)",
    ]
    typo = _write(tmp_path, "typo.yaml", USES_ACTIONS.replace("action: vcli_clean", "action: vcli_claen"))
    code, out, err = _run(capsys, "validate", str(typo), "--actions", str(actions_file))
    assert (code, out) == (1, "")
    assert f"{typo}:7: workflow 'uses', node 'clean': unknown action 'vcli_claen'" in err
    assert "vcli_clean" in err and "vcli_load" in err  # the registered ones are listed
    # Without --actions, names are not checked: the same file is fine.
    assert _run(capsys, "validate", str(typo))[0] == 0


def test_validate_with_actions_checks_signatures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, actions_file: Path
) -> None:
    wrong = _write(tmp_path, "wrong.yaml", USES_ACTIONS.replace("{name: path,", "{name: pth,"))
    code, out, err = _run(capsys, "validate", str(wrong), "--actions", str(actions_file))
    assert (code, out) == (1, "")
    assert "node 'load'" in err and "'pth'" in err and "Traceback" not in err


def test_validate_with_a_missing_actions_file_is_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = _write(tmp_path, "small.yaml", SMALL)
    code, out, err = _run(capsys, "validate", str(good), "--actions", str(tmp_path / "nope.py"))
    assert (code, out) == (1, "")
    assert err == f"error: actions file '{tmp_path / 'nope.py'}' not found\n"


@needs_dot
def test_graph_wraps_long_descriptions_and_has_a_title(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    long = " ".join(f"word{i:03d}" for i in range(38))  # about 300 characters, as in the issue
    assert len(long) >= 300
    text = f"name: wide\ndescription: {long}\nnodes:\n" + "".join(
        f"  - {{id: n{i}, action: a, description: {long}}}\n" for i in range(3)
    )
    output = tmp_path / "wide.svg"
    assert _run(capsys, "graph", str(_write(tmp_path, "wide.yaml", text)), "-o", str(output))[0] == 0
    root = ElementTree.parse(output).getroot()
    for node in (g for g in root.iter(f"{SVG}g") if g.get("class") == "node"):
        box = next(node.iter(f"{SVG}path")).attrib["d"]
        xs = [float(x) for x in re.findall(r"(-?[\d.]+),-?[\d.]+", box)]
        assert max(xs) - min(xs) < 320, f"node box {max(xs) - min(xs)}pt wide"
    assert float(root.attrib["width"].removesuffix("pt")) < 900
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "wide" in texts  # the title
    node_lines = [t for t in texts if t.startswith("word")]
    assert node_lines and max(map(len, node_lines)) <= 80
    assert any(t.endswith("…") for t in node_lines)  # cut, and says so
