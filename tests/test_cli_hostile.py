"""`dagger-nb` with hostile text and refused files: escaped output, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagger_nb import DagExecutor, default_registry
from dagger_nb.cli import MISSING_INPUTS, main

ROOT = Path(__file__).resolve().parents[1]

SURROGATE_ACTIONS = """
import os
import dagger_nb

@dagger_nb.action
def cli_sur_bad():
    raise ValueError("cannot read " + os.fsdecode(b"\\xff"))

@dagger_nb.action
def cli_sur_keys():
    return {"k\\udc00": 1}
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8",  # strict: what a UTF-8 terminal or pipe takes
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "dagger_nb.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, errors="strict", timeout=120, check=False)


@pytest.mark.parametrize(("action", "flags", "shown"), [
    ("cli_sur_bad", [], "cannot read \\udcff"),
    ("cli_sur_keys", ["--show-cache"], "k\\udc00"),
])
def test_run_prints_text_with_lone_surrogates_escaped(
    tmp_path: Path, action: str, flags: list[str], shown: str
) -> None:
    (tmp_path / "sur_actions.py").write_text(SURROGATE_ACTIONS)
    (tmp_path / "flow.yaml").write_text(f"name: sur\nnodes:\n  - {{id: a, action: {action}}}\n")

    done = _cli("run", "flow.yaml", "--actions", "sur_actions.py", *flags, cwd=tmp_path)

    assert "Traceback" not in done.stderr, done.stderr
    assert shown in done.stdout + done.stderr
    assert done.returncode == (1 if action == "cli_sur_bad" else 0), done.stderr


ONE_NODE_ACTIONS = """
import dagger_nb

@dagger_nb.action
def cli_hostile_echo(x):
    return x
"""


@pytest.fixture
def echo_actions(tmp_path: Path):  # type: ignore[no-untyped-def]
    actions = tmp_path / "echo_actions.py"
    actions.write_text(ONE_NODE_ACTIONS)
    yield actions
    if "cli_hostile_echo" in default_registry:
        default_registry.unregister("cli_hostile_echo")


@pytest.mark.parametrize(("yaml", "code"), [
    ("name: refused\nnodes:\n  - {id: a, action: no_such_action}\n", 1),
    ("name: refused\nnodes:\n  - {id: a, action: cli_hostile_echo, inputs: [{name: x, reference: inputs.x}]}\n",
     MISSING_INPUTS),
])
def test_a_refused_run_leaves_no_database_behind(
    tmp_path: Path, echo_actions: Path, yaml: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml)
    db = tmp_path / "runs.db"

    assert main(["run", str(flow), "--actions", str(echo_actions), "--db", str(db)]) == code

    assert "refused" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["echo_actions.py", "flow.yaml"]


def test_the_executor_is_closed_when_the_run_cannot_start(tmp_path: Path, echo_actions: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: fine\nnodes:\n  - {id: a, action: cli_hostile_echo, inputs: [{name: x, value: 1}]}\n")
    db = tmp_path / "runs.db"
    assert main(["run", str(flow), "--actions", str(echo_actions), "--db", str(db)]) == 0
    assert main(["resume", "no-such-run", "--db", str(db), "--actions", str(echo_actions)]) == 1
    # Left open, the file would still be held here: opening it again would take it over, with a
    # DaggerWarning (an error in this suite).
    DagExecutor(default_registry, db=db).close()


def test_validate_prints_names_from_the_file_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text('name: "red\\e[31malert\\a"\nnodes:\n'
                    '  - {id: a, action: x, inputs: [{name: v, reference: "inputs.k\\e[2J"}]}\n')
    bad = tmp_path / "bad.yaml"
    bad.write_text('name: "b\\e[1m"\nnodes:\n  - {id: "n\\e[5m", action: x}\n  - {id: "n\\e[5m", action: x}\n')

    assert main(["validate", str(flow), str(bad)]) == 1

    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out
    assert "workflow 'red\\x1b[31malert\\x07'" in out
    assert "run inputs: k\\x1b[2J (a)" in out
    assert "node 'n\\x1b[5m'" in err
