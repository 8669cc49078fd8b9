"""`dagger-nb run` and the bundled demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dagger_nb import DagExecutor, default_registry
from dagger_nb.cli import main

WORKFLOW = """
name: cli_demo
config: {on_failure: continue, retry_strategy: Immediate}
nodes:
  - id: greet
    action: cli_greet
    inputs: [{name: who, reference: inputs.who}, {name: times, reference: inputs.times}]
  - id: shout
    action: cli_shout
    inputs: [{name: text, reference: greet.result}]
"""

ACTIONS = """
import dagger_nb

@dagger_nb.action
def cli_greet(who, times):
    return ("hello " + who + " ") * times

@dagger_nb.action
def cli_shout(text):
    if "{fail}" in text:
        raise RuntimeError("too quiet")
    return text.upper()
"""


@pytest.fixture
def files(tmp_path: Path):  # type: ignore[no-untyped-def]
    workflow = tmp_path / "flow.yaml"
    workflow.write_text(WORKFLOW)
    actions = tmp_path / "cli_actions.py"
    actions.write_text(ACTIONS.format(fail="bob"))
    yield workflow, actions
    for name in ("cli_greet", "cli_shout"):
        if name in default_registry:
            default_registry.unregister(name)


def test_run_prints_the_outcome_table_and_exits_0(files, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    code = main(["run", str(workflow), "--actions", str(actions), "--input", "who=ann", "--input", "times=2"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "greet" in out and "succeeded" in out
    assert "[cli_demo] 2/2 done, 0 failed" in err


def test_run_failure_exits_1_with_the_error(files, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    code = main(["run", str(workflow), "--actions", str(actions), "--input", "who=bob", "--input", "times=1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "failed: node 'shout' failed: Failed after 3 attempts. Last error: RuntimeError: too quiet" in out
    assert "node 'shout' failed" in err


def test_run_json_and_db_and_svg(files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    db, svg = tmp_path / "runs.db", tmp_path / "run.svg"
    code = main(["run", str(workflow), "--actions", str(actions), "--input", "who=al", "--input", "times=1",
                 "--json", "--db", str(db), "--svg", str(svg)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["status"] == "succeeded"
    assert [o["node"] for o in report["outcomes"]] == ["greet", "shout"]
    assert list(DagExecutor(db=db).runs()["run_id"]) == [report["run_id"]]
    assert svg.read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--actions", "no_such_module_xyz"], "cannot import actions module 'no_such_module_xyz'"),
        (["--actions", "missing.py"], "actions file 'missing.py' not found"),
        (["--actions", "json", "--input", "novalue"], "--input 'novalue' must look like KEY=VALUE"),
    ],
    ids=["module", "file", "input"],
)
def test_user_mistakes_are_one_line_errors(files, args, message, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, _ = files
    assert main(["run", str(workflow), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_actions_file_that_raises_is_reported(files, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, _ = files
    broken = tmp_path / "broken.py"
    broken.write_text("raise ValueError('oops')\n")
    assert main(["run", str(workflow), "--actions", str(broken)]) == 1
    assert "importing actions from" in capsys.readouterr().err


def test_unknown_action_in_the_workflow_is_a_spec_error(files, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, _ = files
    assert main(["run", str(workflow), "--actions", "json"]) == 1
    assert "unknown action 'cli_greet'" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "dagger_nb.examples.demo", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "sales_pipeline.yaml: ok: workflow 'sales_report', 5 nodes" in result.stdout
    assert "revenue_by_region" in result.stdout and "Best region:" in result.stdout
    assert (tmp_path / "sales_pipeline.svg").read_text().count("<g id=\"node") == 5
