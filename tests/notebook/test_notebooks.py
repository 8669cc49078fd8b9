"""Every notebook in notebooks/ runs top to bottom under nbclient without an error output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

#: Text each notebook's saved widget state must hold: the dashboards' final state was recorded.
FINAL_STATE = {
    "01_quickstart_dag.ipynb": "succeeded",
    "02_task_agents.ipynb": "completed",
    "03_pubsub.ipynb": "pub/sub",
    "04_dashboards.ipynb": "succeeded",
    "06_agent_flows.ipynb": "succeeded",
}


def errors_in(notebook: nbformat.NotebookNode) -> list[str]:
    """Every error output, as ``cell N: EName: value``."""
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {index}: {output['ename']}: {output['evalue']}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_clean(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    # The kernel must be this environment's Python (the Makefile installs the `python3` spec here).
    check = nbformat.v4.new_code_cell(f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix")
    notebook.cells.insert(0, check)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=60,
        allow_errors=True,
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},  # files a notebook writes go to tmp
    )
    client.execute()
    nbformat.write(notebook, tmp_path / path.name)
    assert errors_in(notebook) == []
    state = json.dumps(notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}))
    assert FINAL_STATE.get(path.name, "") in state


def test_notebooks_are_committed_without_large_outputs() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"01_quickstart_dag.ipynb", "04_dashboards.ipynb"}
    for path in NOTEBOOKS:
        assert path.stat().st_size < 200_000, f"{path.name}: clear its outputs before committing"


def test_binder_has_what_mybinder_needs() -> None:
    binder = Path(__file__).parents[2] / "binder"
    assert "graphviz" in (binder / "apt.txt").read_text().split()
    assert "jupyterlab" in (binder / "requirements.txt").read_text()
    post_build = binder / "postBuild"
    assert post_build.stat().st_mode & 0o111 and "pip install" in post_build.read_text()
