"""`dagger-nb` with hostile text and refused files: escaped output, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
