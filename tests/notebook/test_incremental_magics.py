"""Incremental runs from cells: edit one ``%%dagger_action``, re-run the workflow cell, only what
changed runs again, also after a kernel restart (a new session on the same folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from dagger_nb.dag import ActionRegistry
from dagger_nb.graph import STATUS_COLOURS
from dagger_nb.notebook.magics import DaggerMagics, load_magics
from dagger_nb.notebook.session import INCREMENTAL_DB, Session
from tests.notebook.conftest import run

pytestmark = pytest.mark.anyio

ACTIONS = {
    "load": "%%dagger_action\ndef load(x):\n    calls.append('load')\n    return x + 1\n",
    "double": "%%dagger_action\ndef double(value):\n    calls.append('double')\n    return value * 2\n",
    "publish": "%%dagger_action\ndef publish(value):\n    calls.append('publish')\n    return f'published {value}'\n",
}

PIPELINE = """%%dagger_workflow pipeline --no-graph --run --wait --inputs x=1{options}
nodes:
  - {{id: load, action: load, inputs: [{{name: x, reference: inputs.x}}]}}
  - {{id: double, action: double, inputs: [{{name: value, reference: load.result}}]}}
  - {{id: publish, action: publish, inputs: [{{name: value, reference: double.result}}]}}
"""


def define_actions(shell: InteractiveShell, **edits: str) -> None:
    shell.user_ns["calls"] = []
    for name, cell in ACTIONS.items():
        run(shell, edits.get(name, cell))


def run_pipeline(shell: InteractiveShell, options: str = " --incremental") -> dict[str, str]:
    shell.user_ns["calls"].clear()
    run(shell, PIPELINE.format(options=options))
    handle = shell.user_ns["_dagger_run"]
    assert handle.status == "succeeded", handle.report.error
    return {node: outcome.status for node, outcome in handle.report.outcomes.items()}


@pytest.fixture
def in_notebook_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # a kernel's working folder is its notebook's
    return tmp_path


async def test_editing_one_action_cell_reruns_only_it_and_what_its_change_reaches(
    shell: InteractiveShell, magics: DaggerMagics, in_notebook_folder: Path
) -> None:
    define_actions(shell)
    assert run_pipeline(shell) == dict.fromkeys(["load", "double", "publish"], "succeeded")
    assert (in_notebook_folder / INCREMENTAL_DB).exists()
    assert run_pipeline(shell) == dict.fromkeys(["load", "double", "publish"], "cached")
    assert shell.user_ns["calls"] == []
    dashboard = magics.session.dashboards[shell.user_ns["_dagger_run"].run_id]
    assert STATUS_COLOURS["cached"] in dashboard.header.value and "cached</span>&nbsp;3" in dashboard.header.value
    assert "3/3" in dashboard.progress.value and STATUS_COLOURS["cached"] in dashboard.progress.value

    run(shell, ACTIONS["double"].replace("value * 2", "value + value"))  # same output
    assert run_pipeline(shell) == {"load": "cached", "double": "succeeded", "publish": "cached"}
    run(shell, ACTIONS["double"].replace("value * 2", "value * 3"))  # another output
    assert run_pipeline(shell) == {"load": "cached", "double": "succeeded", "publish": "succeeded"}
    reasons = {n: o.reason for n, o in shell.user_ns["_dagger_run"].report.outcomes.items()}
    assert reasons == {"load": f"reused from run {shell.user_ns['_dagger_run'].report.outcomes['load'].cached_from}",
                       "double": "code changed", "publish": "input 'value' changed"}
    assert shell.user_ns["_dagger_run"].report.cache.get("publish", "result") == "published 6"

    assert run_pipeline(shell, " --fresh") == dict.fromkeys(["load", "double", "publish"], "succeeded")
    assert run_pipeline(shell, "") == dict.fromkeys(["load", "double", "publish"], "succeeded")  # the config: off


async def test_unchanged_nodes_are_reused_after_a_kernel_restart(
    shell: InteractiveShell, magics: DaggerMagics, in_notebook_folder: Path
) -> None:
    define_actions(shell)
    run_pipeline(shell)
    first_run = shell.user_ns["_dagger_run"].run_id
    await magics.session.aclose()
    magics.session.executor.close()  # the kernel dies: its file lock goes with it

    restarted = Session(registry=ActionRegistry())
    try:
        shell.reset(new_session=False)
        load_magics(shell, restarted)
        define_actions(shell, double=ACTIONS["double"].replace("value * 2", "value * 5"))  # edited meanwhile
        assert run_pipeline(shell) == {"load": "cached", "double": "succeeded", "publish": "succeeded"}
        assert shell.user_ns["_dagger_run"].report.outcomes["load"].cached_from == first_run
        assert shell.user_ns["calls"] == ["double", "publish"]
    finally:
        await restarted.aclose()
        restarted.executor.close()


async def test_the_workflow_config_turns_it_on_without_a_flag(
    shell: InteractiveShell, magics: DaggerMagics, in_notebook_folder: Path
) -> None:
    define_actions(shell)
    configured = PIPELINE.replace("nodes:", "config: {{enable_incremental_cache: true}}\nnodes:")
    for expected in ("succeeded", "cached"):
        shell.user_ns["calls"].clear()
        run(shell, configured.format(options=""))
        report = shell.user_ns["_dagger_run"].report
        assert {o.status for o in report.outcomes.values()} == {expected}
    assert magics.session.executor.db == str(in_notebook_folder / INCREMENTAL_DB)


@pytest.mark.parametrize(
    "line, message",
    [
        ("%dagger_run pipeline --incremental --fresh", "give one"),
        ("%%dagger_workflow pipeline --incremental\nnodes: [{id: a, action: load}]", "need --run"),
    ],
)
async def test_contradictory_flags_are_usage_errors(
    shell: InteractiveShell, magics: DaggerMagics, line: str, message: str
) -> None:
    define_actions(shell)
    with pytest.raises(UsageError, match=message):
        run(shell, line)
