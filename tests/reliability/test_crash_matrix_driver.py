"""bench/crash_matrix.py: the table it prints and the exit code its verdict gives, with stand-in
scenario modules (the real ones are exercised by each paradigm's own crash test)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_matrix_driver", ROOT / "bench" / "crash_matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


driver = _driver()


def scenario(**counts: int) -> ModuleType:
    """A stand-in scenario module whose crash_matrix reports ``counts`` and records its call."""
    module = ModuleType("fake_scenario")
    module.calls = []  # type: ignore[attr-defined]

    def crash_matrix(*, kills: int, items: int, workdir: Path, seed: int) -> dict[str, int]:
        module.calls.append({"kills": kills, "items": items, "workdir": workdir, "seed": seed})  # type: ignore[attr-defined]
        assert workdir.is_dir()
        return {"kills": kills, "items": items, "lost": 0, "redone": 0, "in_flight_allowance": 3, "stuck": 0, **counts}

    module.crash_matrix = crash_matrix  # type: ignore[attr-defined]
    return module


def loader(modules: dict[str, ModuleType | None]) -> Any:
    return lambda paradigm: modules.get(paradigm)


def test_every_scenario_keeping_its_promises_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    modules: dict[str, ModuleType | None] = {name: scenario(redone=3) for name in driver.PARADIGMS}
    assert driver.main(["--kills", "4", "--items", "50", "--seed", "7"], load=loader(modules)) == 0
    out = capsys.readouterr().out
    for name, module in modules.items():
        assert module is not None
        assert [(call["kills"], call["items"], call["seed"]) for call in module.calls] == [(4, 50, 7)]
        assert any(line.split()[0] == name and line.split()[-1] == "ok" for line in out.splitlines())


@pytest.mark.parametrize(
    ("counts", "problem"),
    [
        pytest.param({"lost": 1}, "1 acknowledged items lost", id="lost"),
        pytest.param({"stuck": 2}, "2 items stuck", id="stuck"),
        pytest.param({"redone": 4}, "4 finished items redone, more than the 3 in flight", id="redone"),
    ],
)
def test_a_broken_promise_exits_1_and_says_which(
    capsys: pytest.CaptureFixture[str], counts: dict[str, int], problem: str
) -> None:
    modules = {"dag": scenario(), "agents": scenario(**counts), "pubsub": scenario()}
    assert driver.main(["--kills", "2", "--items", "10"], load=loader(modules)) == 1
    out = capsys.readouterr().out
    assert f"agents: FAIL: {problem}" in out
    assert "dag: FAIL" not in out and "pubsub: FAIL" not in out


def test_a_matrix_where_no_kill_landed_fails(capsys: pytest.CaptureFixture[str]) -> None:
    modules = {"dag": scenario(kills=0), "agents": scenario(kills=1), "pubsub": scenario()}
    assert driver.main(["--kills", "3", "--items", "10"], load=loader(modules)) == 1
    out = capsys.readouterr().out
    assert "dag: FAIL: no kill landed: the matrix tested nothing" in out
    assert "agents: note: 1 of 3 kills landed before the work ended" in out
    assert "agents: FAIL" not in out and "pubsub" in out


def test_a_missing_scenario_is_skipped_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    modules = {"dag": None, "agents": scenario(), "pubsub": scenario()}
    assert driver.main(["--kills", "1", "--items", "5"], load=loader(modules)) == 0
    out = capsys.readouterr().out
    assert "dag: skipped: tests/reliability/dag_scenario.py does not exist yet" in out


def test_nothing_run_is_not_a_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert driver.main(["--only", "dag"], load=loader({})) == 1
    assert "nothing ran" in capsys.readouterr().out


def test_a_scenario_that_raises_or_reports_too_little_fails(capsys: pytest.CaptureFixture[str]) -> None:
    broken = ModuleType("broken")

    def crash_matrix(**_: Any) -> dict[str, int]:
        raise RuntimeError("child never started")

    broken.crash_matrix = crash_matrix  # type: ignore[attr-defined]
    partial = ModuleType("partial")
    partial.crash_matrix = lambda **_: {"kills": 1, "lost": 0}  # type: ignore[attr-defined]
    modules = {"dag": broken, "agents": partial, "pubsub": scenario()}
    assert driver.main(["--kills", "1", "--items", "5"], load=loader(modules)) == 1
    out = capsys.readouterr().out
    assert "dag: FAIL: the scenario raised" in out and "child never started" in out
    assert "agents: FAIL: its counts lack items, redone, in_flight_allowance, stuck" in out


def test_only_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    modules = {"pubsub": scenario()}
    assert driver.main(["--only", "pubsub", "--kills", "1", "--items", "5"], load=loader(modules)) == 0
    with pytest.raises(SystemExit) as exited:
        driver.main(["--only", "dags"], load=loader(modules))
    assert exited.value.code == 2
    assert "--only takes names among dag, dag_steps, agents, pubsub" in capsys.readouterr().err


def test_orphaned_nodes_of_a_killed_step_fail_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    modules = {"dag_steps": scenario(orphans=2)}
    assert driver.main(["--only", "dag_steps", "--kills", "1", "--items", "5"], load=loader(modules)) == 1
    out = capsys.readouterr().out
    assert "dag_steps: orphans 2" in out and "2 nodes a killed step added were kept and added again" in out


def test_the_real_modules_are_found_from_the_repository_root(tmp_path: Path) -> None:
    """Run as a script from another folder: the import of tests.reliability works, and a scenario
    module not written yet is reported as skipped rather than crashing the driver."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "crash_matrix.py"), "--only", "dag", "--kills", "1", "--items", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
    )
    exists = (ROOT / "tests" / "reliability" / "dag_scenario.py").exists()
    if exists:
        assert "dag" in result.stdout and "SKIPPED" not in result.stdout, result.stdout + result.stderr
    else:
        assert result.returncode == 1
        assert "dag: skipped: tests/reliability/dag_scenario.py does not exist yet" in result.stdout
