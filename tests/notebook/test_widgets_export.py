"""``%dagger_export`` and the job report's ``to_html``/``to_json``: what a user writes to a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from dagger_nb.notebook.magics import DaggerMagics
from tests.notebook.conftest import run

pytestmark = pytest.mark.anyio

BROKEN_ACTION = '''%%dagger_action
def parse(request):
    print("parsing", request)
    return request["body"]
'''
BROKEN_FLOW = '''%%dagger_workflow parsing --no-graph --run --wait --inputs "{'r': {}}"
config: {max_attempts: 1}
nodes:
  - {id: p, action: parse, inputs: [{name: request, reference: inputs.r}]}
'''
BROKEN_AGENT = '''%%dagger_agent parser
async def parser(input, ctx):
    print("parsing", input)
    return {"body": input["request"]["body"]}
'''


async def test_export_a_run_as_html_and_json(shell: InteractiveShell, magics: DaggerMagics, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run(shell, BROKEN_ACTION)
    run(shell, BROKEN_FLOW)
    run_id = shell.user_ns["_dagger_run"].run_id
    page_path, json_path = tmp_path / "run report.html", tmp_path / "run.JSON"
    run(shell, f'%dagger_export {run_id} "{page_path}"')
    run(shell, f"%dagger_export {run_id} {json_path}")
    out = capsys.readouterr().out
    assert f"wrote run {run_id} (paused) to {page_path}" in out
    page = page_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<details class='dagger-traceback'><summary><b>p</b>" in page
    assert 'return request[&quot;body&quot;]' in page and "Cell In[" in page  # the cell's line
    assert "parsing {}" in page  # the node's logs
    (node,) = json.loads(json_path.read_text(encoding="utf-8"))["nodes"]
    assert node["traceback"].endswith("KeyError: 'body'") and node["logs"] == ["parsing {}"]


async def test_export_a_job_as_html_and_json(shell: InteractiveShell, magics: DaggerMagics, tmp_path: Path) -> None:
    run(shell, BROKEN_AGENT)
    manager = magics.session.task_manager
    manager.add_objective("j1", "parse it", "parser", {"request": {}})
    report = await magics.session.start_job("j1").wait()
    run(shell, f"%dagger_export j1 {tmp_path / 'job.html'}")
    run(shell, f"%dagger_export j1 {tmp_path / 'job.json'}")
    page = (tmp_path / "job.html").read_text(encoding="utf-8")
    assert page == report.to_html()  # the magic and the report's method write the same page
    assert "<details class='dagger-traceback'>" in page and "in parser" in page
    assert "<h2>Graph</h2>" in page  # drawn from the report's own tasks
    document = json.loads((tmp_path / "job.json").read_text(encoding="utf-8"))
    assert document == json.loads(report.to_json())
    (task,) = document["tasks"]
    assert task["status"] == "failed" and task["traceback"].endswith("KeyError: 'body'")


async def test_a_job_not_started_in_this_session_exports_its_tasks_as_they_are(
    shell: InteractiveShell, magics: DaggerMagics, tmp_path: Path
) -> None:
    run(shell, BROKEN_AGENT)
    magics.session.task_manager.add_objective("later", "parse it later", "parser", {"request": {}})
    run(shell, f"%dagger_export later {tmp_path / 'later.json'}")
    document = json.loads((tmp_path / "later.json").read_text(encoding="utf-8"))
    assert [task["status"] for task in document["tasks"]] == ["pending"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("%dagger_export", "the following arguments are required"),
        ("%dagger_export nope out.html", "no run or job with id 'nope'"),
        ("%dagger_export RUN out.csv", "use .html (a page) or .json"),
        ("%dagger_export RUN /no/such/folder/out.html", "folder '/no/such/folder' does not exist"),
    ],
)
async def test_export_usage_errors(shell: InteractiveShell, magics: DaggerMagics, line: str, message: str) -> None:
    run(shell, BROKEN_ACTION)
    run(shell, BROKEN_FLOW)
    line = line.replace("RUN", shell.user_ns["_dagger_run"].run_id)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        run(shell, line)
