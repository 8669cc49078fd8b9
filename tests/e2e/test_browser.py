"""A real browser: JupyterLab in headless Chromium runs 04_dashboards.ipynb like a person would.

JupyterLab starts on a free loopback port with throw-away settings (no news
toast, no autosave, every cell kept in the DOM) on a copy of the notebook, so
the repository is never touched. Playwright drives Debian's Chromium (it cannot
download its own browser here). The test clicks Run > Run All Cells, samples the
run dashboard's table while the run goes on, then checks that the dashboard
rendered as a widget (not its text repr), that its table changed over time,
that the graph SVG is there, and that no cell shows an error. It saves a
screenshot in its temporary folder (and in ``$DAGGER_NB_SCREENSHOT_DIR`` when set). The
240-node run must show its collapsed view: one box per action, a progress bar per action.

A second test runs a 3-node chain whose middle node takes 4 s, next to a node
that fails at once: about 2 s in, the screenshot and the DOM must show the
middle node running in the graph and a clock past 1.5 s (the graph and the
clock are current without any further event), and the failed node's
traceback unfolds on a click.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "04_dashboards.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none",
                                                                   "scrollPastEnd": False},
}
RUN_TABLE = ".dagger-run-dashboard .dagger-table"
CHAIN_NOTEBOOK = "chain.ipynb"
CHAIN_CELLS = [
    "%load_ext dagger_nb\n"
    "import anyio\n"
    "import dagger_nb.notebook\n"
    "from dagger_nb.dag import WorkflowSpec\n"
    "from dagger_nb.notebook import RunDashboard\n"
    "session = dagger_nb.notebook.session()",
    "%%dagger_action\n"
    "async def step(x=0, seconds=0.0):\n"
    "    await anyio.sleep(seconds)\n"
    "    return x + 1",
    "%%dagger_action\n"
    "def parse_request(request=None):\n"
    "    print('parsing the request')\n"
    "    return {}['body']",
    "spec = WorkflowSpec.model_validate({'name': 'chain', 'config': {'on_failure': 'continue', 'max_attempts': 1},\n"
    "    'nodes': [{'id': 'a', 'action': 'step', 'inputs': [{'name': 'seconds', 'value': 0.2}]},\n"
    "              {'id': 'b', 'action': 'step', 'inputs': [{'name': 'x', 'reference': 'a.result'},\n"
    "                                                       {'name': 'seconds', 'value': 4.0}]},\n"
    "              {'id': 'c', 'action': 'step', 'inputs': [{'name': 'x', 'reference': 'b.result'}]},\n"
    "              {'id': 'parse', 'action': 'parse_request'}]})\n"
    "session.executor.add_workflow(spec)\n"
    "run = session.start('chain')\n"
    "RunDashboard(run)",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed (/usr/bin/chromium); "
                                                     "apt-get install chromium to run the browser test"),
]

JS_STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)') || document;
  const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).map(p => p.textContent.trim());
  const bar = (document.querySelector('#jp-main-statusbar') || {}).textContent || '';
  const m = bar.match(/\\|\\s*(Idle|Busy|Starting|Restarting|Connecting|Unknown|Dead|Initializing)/i);
  const table = document.querySelector('%s');
  const header = document.querySelector('.dagger-run-dashboard .dagger-header');
  return {prompts, kernel: m ? m[1] : null, table: table ? table.textContent : null,
          header: header ? header.textContent : '',
          dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText.slice(0, 200))};
}""".replace("%s", RUN_TABLE)

JS_MODEL_ERRORS = """() => {
  const w = window.jupyterapp.shell.currentWidget; const cells = w.content.model.cells; const errors = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    for (const o of c.outputs.toJSON()) if (o.output_type === 'error') errors.push(`${i}: ${o.ename}: ${o.evalue}`);
  }
  return errors;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab_ready(url: str, token: str) -> bool:
    request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """JupyterLab serving a copy of the notebook; stopped by its PID afterwards."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    (root / CHAIN_NOTEBOOK).write_text(json.dumps(chain_notebook()))
    settings = tmp_path / "settings"
    for name, data in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(data))
    port, token = free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
               f"--FileCheckpoints.checkpoint_dir={tmp_path / 'checkpoints'}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly", "--expose-app-in-browser"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not lab_ready(url, token):
            assert server.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not start in 90 s"
            time.sleep(0.2)
        yield url, token, root
    finally:
        try:
            request = urllib.request.Request(f"{url}/api/shutdown", method="POST",
                                             headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(request, timeout=5).close()
            server.wait(timeout=15)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        log.close()


def test_dashboards_notebook_in_a_real_browser(lab: tuple[str, str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url, token, _root = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            # tall enough for the whole dashboards output, so a screenshot never has to scroll
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.set_default_timeout(90_000)
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}&reset")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
            wait_until(page, lambda st: st["kernel"] == "Idle", 90, "the kernel never became idle")
            try:
                page.click("#jp-MainMenu .lm-MenuBar-item:has(.lm-MenuBar-itemLabel:text-is('Run'))", timeout=5000)
                page.click(".lm-Menu .lm-Menu-item[data-command='runmenu:run-all']", timeout=5000)
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
                page.evaluate("() => window.jupyterapp.commands.execute('runmenu:run-all')")

            tables: list[str] = []
            live_shot = None
            idle_polls, deadline = 0, time.monotonic() + 120
            while idle_polls < 3:
                state = page.evaluate(JS_STATE)
                if state["table"] and (not tables or tables[-1] != state["table"]):
                    tables.append(state["table"])
                if (live_shot is None and state["table"] and "running" in state["table"]
                        and clock_of(state["header"]) >= 2.0):  # mid-run, the graph drawn a few times
                    live_shot = save_screenshot(page, tmp_path / "dashboard.png")
                done = all(p.startswith("[") and p != "[*]:" and p != "[ ]:" for p in state["prompts"])
                idle_polls = idle_polls + 1 if done and state["kernel"] == "Idle" else 0
                assert time.monotonic() < deadline, f"the notebook did not finish: {state}"
                time.sleep(0.2)

            assert page.evaluate(JS_MODEL_ERRORS) == []
            visible = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert not any("Traceback" in text for text in visible.all_text_contents())
            # rendered as widgets, not as their text repr
            assert page.locator(".jupyter-widgets.dagger-run-dashboard").count() == 1
            assert page.locator(".jupyter-widgets.dagger-job-dashboard").count() == 1
            assert "RunDashboard(children" not in page.locator(".jp-NotebookPanel").inner_text()
            # the status table changed while the run went on, and ends with the run done
            assert len(tables) >= 2, tables
            final_header = page.locator(".dagger-run-dashboard .dagger-header").inner_text()
            assert "succeeded" in final_header
            assert page.locator(".dagger-run-dashboard .dagger-graph svg").count() == 1
            assert page.locator(".dagger-job-dashboard .dagger-graph svg").count() == 1
            # 240 nodes: the graph is one box per action, with a progress bar per action and a timeline
            run_graph = page.locator(".dagger-run-dashboard .dagger-graph svg").inner_html()
            assert "<title>action:work</title>" in run_graph and "240 succeeded" in run_graph
            assert page.locator(".dagger-run-dashboard .dagger-action-progress tr").count() == 1
            assert page.locator(".dagger-run-dashboard .dagger-timeline rect.dagger-span").count() > 0
            assert "240/240 nodes" in page.locator(".dagger-run-dashboard .dagger-progress").inner_text()

            save_screenshot(page, tmp_path / "dashboard-final.png")
            assert live_shot is not None, "no screenshot of the run while it went on"
        finally:
            browser.close()


def wait_until(page: object, check: object, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        state = page.evaluate(JS_STATE)  # type: ignore[attr-defined]
        if any("Select Kernel" in d for d in state["dialogs"]):
            page.click(".jp-Dialog .jp-mod-accept")  # type: ignore[attr-defined]
        if check(state):  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, f"{message}: {state}"
        time.sleep(0.2)


def save_screenshot(page: object, path: Path) -> Path:
    """The dashboards' output, without the file browser; also copied to $DAGGER_NB_SCREENSHOT_DIR."""
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # type: ignore[attr-defined]
    output = page.locator(".jp-OutputArea-output:has(.dagger-run-dashboard)").first  # type: ignore[attr-defined]
    output.evaluate("e => e.scrollIntoView({block: 'start'})")
    output.screenshot(path=str(path))
    extra = os.environ.get("DAGGER_NB_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def chain_notebook() -> dict[str, object]:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {}, "outputs": [],
              "source": source} for i, source in enumerate(CHAIN_CELLS)]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


JS_CHAIN = """() => {
  const board = document.querySelector('.dagger-run-dashboard');
  if (!board) return null;
  const header = board.querySelector('.dagger-header').textContent;
  const nodes = {};
  for (const g of board.querySelectorAll('.dagger-graph svg g.node')) {
    const title = g.querySelector('title');
    nodes[title ? title.textContent : '?'] = Array.from(g.querySelectorAll('text')).map(t => t.textContent).join(' ');
  }
  return {header, nodes, table: board.querySelector('.dagger-table').textContent};
}"""


def clock_of(header: str) -> float:
    match = re.search(r" · (\d+\.\d)s", header)
    return float(match.group(1)) if match else 0.0


def test_a_running_chain_shows_its_middle_node_running_and_a_ticking_clock(
    lab: tuple[str, str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    url, token, _root = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.set_default_timeout(90_000)
            page.goto(f"{url}/lab/tree/{CHAIN_NOTEBOOK}?token={token}&reset")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
            wait_until(page, lambda st: st["kernel"] == "Idle", 90, "the kernel never became idle")
            page.evaluate("() => window.jupyterapp.commands.execute('runmenu:run-all')")
            deadline = time.monotonic() + 90
            state = None
            while True:  # about 2 s into the run, with b (4 s long) still running
                state = page.evaluate(JS_CHAIN)
                if state and clock_of(state["header"]) >= 1.8:
                    break
                assert time.monotonic() < deadline, f"the run's clock never reached 1.8 s: {state}"
                time.sleep(0.05)
            shot = tmp_path / "chain-running.png"
            save_screenshot(page, shot)
            state = page.evaluate(JS_CHAIN)
            assert "running" in state["header"] and 1.5 < clock_of(state["header"]) < 4.0, state
            assert "succeeded" in state["nodes"]["a"], state
            assert "running" in state["nodes"]["b"], state  # the graph is current, not a stale picture
            assert "pending" in state["nodes"]["c"], state
            # the failed node's traceback is folded under its error, and unfolds on a click
            summary = page.locator(".dagger-run-dashboard .dagger-errors details.dagger-traceback summary")
            summary.first.click()
            trace = page.locator(".dagger-run-dashboard .dagger-errors details[open] pre").first.inner_text()
            assert "Cell In[" in trace and "return {}['body']" in trace and trace.strip().endswith("KeyError: 'body'")
            logs = page.locator(".dagger-run-dashboard .dagger-logs").inner_text()
            assert "parse" in logs
            wait_until(page, lambda st: not any(p == "[*]:" for p in st["prompts"]), 60, "the cells never ran")
            final_deadline = time.monotonic() + 30
            while "succeeded" not in (page.evaluate(JS_CHAIN) or {}).get("nodes", {}).get("c", ""):
                assert time.monotonic() < final_deadline, page.evaluate(JS_CHAIN)
                time.sleep(0.2)
            assert "failed" in page.evaluate(JS_CHAIN)["header"]
            # zoom: the graph fits the panel; 200% draws it twice as big in a panel that scrolls (pans)
            graph = ".dagger-run-dashboard .dagger-graph"
            fitted = page.locator(f"{graph} svg").bounding_box()
            panel = page.locator(graph).bounding_box()
            assert fitted is not None and panel is not None and fitted["width"] <= panel["width"] + 1
            page.locator(".dagger-run-dashboard .dagger-zoom button:text-is('200%')").click()
            page.wait_for_selector(f"{graph} .dagger-svg[data-zoom='2']")
            zoomed = page.locator(f"{graph} svg").bounding_box()
            assert zoomed is not None and zoomed["width"] == pytest.approx(2 * fitted["width"], rel=0.05)
            overflow = page.locator(f"{graph} .dagger-svg").evaluate("e => getComputedStyle(e).overflow")
            assert overflow == "auto"
            page.locator(".dagger-run-dashboard .dagger-zoom button:text-is('fit')").click()
            page.wait_for_selector(f"{graph} .dagger-svg[data-zoom='0']")
        finally:
            browser.close()
