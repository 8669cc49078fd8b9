"""`dagger-nb run` and the bundled demo."""

from __future__ import annotations

import json
import os
import shlex
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
    assert list(DagExecutor(db=db).runs_frame()["run_id"]) == [report["run_id"]]
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


# -- missing inputs, paused runs and `resume`, closed pipes ---------------------------------------


def test_missing_run_inputs_exit_2_before_anything_runs(files, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    db = tmp_path / "runs.db"
    code = main(["run", str(workflow), "--actions", str(actions), "--input", "who=ann", "--db", str(db)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "error: workflow 'cli_demo' needs run inputs that were not given (nothing was run):",
        "  times  (read by greet)",
        "give them with --input times=VALUE",
    ]
    assert DagExecutor(db=db).runs_frame().empty  # nothing started, nothing recorded


PAUSING = """
name: cli_pausing
config: {on_failure: Pause, max_attempts: 1}
nodes:
  - {id: first, action: cli_step, inputs: [{name: x, reference: inputs.x}]}
  - {id: second, action: cli_check, inputs: [{name: x, reference: first.result}]}
"""
PAUSING_ACTIONS = """
import dagger_nb

@dagger_nb.action
def cli_step(x):
    return x + 1

@dagger_nb.action
def cli_check(x):
    {body}
"""


@pytest.fixture
def pausing(tmp_path: Path):  # type: ignore[no-untyped-def]
    workflow = tmp_path / "pausing.yaml"
    workflow.write_text(PAUSING)
    actions = tmp_path / "pausing_actions.py"
    actions.write_text(PAUSING_ACTIONS.format(body="raise ValueError(f'bad {x}')"))
    yield workflow, actions
    for name in ("cli_step", "cli_check"):
        if name in default_registry:
            default_registry.unregister(name)


def test_a_paused_run_fails_the_process_and_says_how_to_resume(pausing, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = pausing
    db = tmp_path / "runs.db"
    code = main(["run", str(workflow), "--actions", str(actions), "--input", "x=1", "--db", str(db)])
    out = capsys.readouterr().out
    assert code == 1
    reader = DagExecutor(db=db)
    run_id = reader.runs_frame()["run_id"][0]
    reader.close()
    command = f"dagger-nb resume {run_id} --db {db} --actions {actions}"
    assert f"failed (paused: resume with `{command}` once the cause is fixed): node 'second' failed" in out
    # The command it gives works once the action is fixed; the succeeded node is not run again.
    actions.write_text(PAUSING_ACTIONS.format(body="return x * 10"))
    code = main([*command.split()[1:], "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["status"] == "succeeded" and report["run_id"] == run_id
    attempts = {o["node"]: o["attempts"] for o in report["outcomes"]}
    assert attempts == {"first": 1, "second": 1}


def test_a_paused_run_without_db_says_it_cannot_be_resumed(pausing, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = pausing
    assert main(["run", str(workflow), "--actions", str(actions), "--input", "x=1", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "paused"
    assert "failed (paused: the run was not recorded; run again with --db FILE to be able to resume it)" in err


def test_resume_mistakes_are_messages(pausing, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _, actions = pausing
    assert main(["resume", "abc", "--db", str(tmp_path / "none.db"), "--actions", str(actions)]) == 1
    assert f"run database '{tmp_path / 'none.db'}' not found" in capsys.readouterr().err
    db = tmp_path / "runs.db"
    DagExecutor(db=db).close()
    assert main(["resume", "abc", "--db", str(db), "--actions", str(actions)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "abc" in err and "Traceback" not in err


def _closed_pipe_run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI with its stdout a pipe nobody reads: closed before the child writes a byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run([sys.executable, "-m", "dagger_nb.cli", *argv], stdout=write_end,
                                 stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write_end)
    return process


def test_output_to_a_closed_pipe_ends_quietly(files) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    result = _closed_pipe_run(["run", str(workflow), "--actions", str(actions), "--input", "who=al",
                               "--input", "times=1", "--json"])
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode == 1
    result = _closed_pipe_run(["graph", str(workflow)])
    assert result.stderr == "" and result.returncode == 1


def test_run_json_piped_into_head_ends_quietly(files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    pipeline = (f"{shlex.quote(sys.executable)} -m dagger_nb.cli run {shlex.quote(str(workflow))} "
                f"--actions {shlex.quote(str(actions))} --input who=al --input times=1 --json --show-cache "
                "2>err.txt | head -1")
    result = subprocess.run(["bash", "-c", pipeline], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.stdout == "{\n"
    err = (tmp_path / "err.txt").read_text()
    assert "Traceback" not in err and "BrokenPipeError" not in err


# -- incremental runs ------------------------------------------------------------------------------

RUN_ARGS = ["--input", "who=ann", "--input", "times=2"]


def test_incremental_run_reuses_unchanged_nodes_in_the_file_beside_the_workflow(files, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    argv = ["run", str(workflow), "--actions", str(actions), *RUN_ARGS, "--incremental"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    default_db = workflow.parent / ".dagger-cache.db"
    assert f"runs and stored results in '{default_db}'" in err and default_db.is_file()
    assert "incremental: 0 of 2 nodes cached" in out and "ran     greet  (no stored result)" in out

    assert main(argv) == 0  # the same code and inputs: nothing runs
    out, err = capsys.readouterr()
    assert "[cli_demo] 2/2 done (2 cached), 0 failed" in err
    assert "incremental: 2 of 2 nodes cached" in out
    assert "cached  greet  (reused from run " in out and "cached  shout  (reused from run " in out
    assert "succeeded" not in out.split("incremental:")[0]  # the table's status column says cached

    actions.write_text(ACTIONS.format(fail="bob").replace("text.upper()", "text.upper() + '!'"))
    assert main([*argv, "--json"]) == 0  # an edited action re-runs; its unchanged upstream is reused
    nodes = {o["node"]: o for o in json.loads(capsys.readouterr().out)["outcomes"]}
    assert nodes["greet"]["status"] == "cached" and nodes["greet"]["cached_from"]
    assert nodes["shout"]["status"] == "succeeded" and nodes["shout"]["reason"] == "code changed"


def test_fresh_runs_every_node_and_stores_for_the_next_run(files, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    db = tmp_path / "chosen.db"
    base = ["run", str(workflow), "--actions", str(actions), *RUN_ARGS, "--db", str(db)]
    assert main([*base, "--incremental"]) == 0
    capsys.readouterr()
    assert main([*base, "--fresh", "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert {o["node"]: (o["status"], o["reason"]) for o in fresh["outcomes"]} == {
        "greet": ("succeeded", "a fresh run was asked for"), "shout": ("succeeded", "a fresh run was asked for")}
    assert not (workflow.parent / ".dagger-cache.db").exists()  # --db is where it goes
    assert main([*base, "--incremental", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {o["node"]: o["status"] for o in report["outcomes"]} == {"greet": "cached", "shout": "cached"}


def test_fresh_and_incremental_together_is_a_usage_error(files, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(workflow), "--actions", str(actions), *RUN_ARGS, "--incremental", "--fresh"])
    assert exit_info.value.code == 2
    assert "--fresh: not allowed with argument --incremental" in capsys.readouterr().err
    assert not (workflow.parent / ".dagger-cache.db").exists()


def test_a_plain_run_stores_nothing_and_prints_no_reuse_summary(files, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    assert main(["run", str(workflow), "--actions", str(actions), *RUN_ARGS]) == 0
    assert "incremental:" not in capsys.readouterr().out
    assert not (workflow.parent / ".dagger-cache.db").exists()


def test_an_incremental_run_whose_default_file_another_process_holds_says_so(files, capsys) -> None:  # type: ignore[no-untyped-def]
    workflow, actions = files
    default_db = workflow.parent / ".dagger-cache.db"
    holder = subprocess.Popen(  # a notebook kernel with that folder's results open
        [sys.executable, "-c", "import sys\nfrom dagger_nb import ActionRegistry, DagExecutor\n"
         f"executor = DagExecutor(ActionRegistry(), db={str(default_db)!r})\nprint('ready', flush=True)\n"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        code = main(["run", str(workflow), "--actions", str(actions), *RUN_ARGS, "--incremental"])
        _, err = capsys.readouterr()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
        assert holder.stdout is not None
        holder.stdout.close()
    assert code == 1
    assert f"error: database '{default_db}'" in err and f"PID {holder.pid}" in err
    assert "Traceback" not in err
