"""The README's runnable examples run as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def python_block(section: str) -> str:
    """The first ```python block after the heading ``section``."""
    text = README.read_text()
    return text.split(section, 1)[1].split("```python", 1)[1].split("```", 1)[0]


def test_task_agents_example_runs(tmp_path: Path) -> None:
    code = python_block("## Task agents") + (
        "\nassert report.status == 'completed', report\n"
        "assert report.result == manager.get_task(report.objective.task_id).output.data\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "LLM(write about LLM(search bees))"
