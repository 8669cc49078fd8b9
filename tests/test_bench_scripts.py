"""Every script in bench/ runs to its verdict on a small workload.

These check that the scripts a person reruns to check a performance claim still
work; they do not check the claims (timings in unit tests would be flaky). A
script exits 0 when its targets are met and 1 when one is missed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPTS = [
    pytest.param("task_throughput.py", ["--repeats", "1"], "targets: db >= 0.5x floor", id="task_throughput"),
    pytest.param("pubsub_throughput.py", ["--messages", "500"], "ratio with schema:", id="pubsub_throughput"),
    pytest.param("dashboard_overhead.py", ["--nodes", "50", "--tasks", "30", "--repeat", "1"], "with dashboards:",
                 id="dashboard"),
    pytest.param("dag_overhead.py", ["--small"], "fanout_2000: peak traced memory", id="dag_overhead"),
    pytest.param("startup.py", ["--rounds", "1"], "3-node first result", id="startup"),
    pytest.param(
        "dask_scaling.py",
        ["--repeat", "1", "--nodes", "4", "--fanout", "20"],
        "fanout_20 (22 nodes): client.submit",
        id="dask_scaling",
        marks=pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs the dask extra"),
    ),
]


@pytest.mark.parametrize(("script", "args", "verdict"), SCRIPTS)
def test_bench_script_runs_to_its_verdict(script: str, args: list[str], verdict: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # stderr is not checked for tracebacks: Dask logs some on a cluster's shutdown
    assert done.returncode in (0, 1), done.stderr
    assert verdict in done.stdout, done.stdout + done.stderr
    if done.returncode == 1:  # a missed target, not an uncaught exception
        assert "MISSED" in done.stdout, done.stdout + done.stderr
