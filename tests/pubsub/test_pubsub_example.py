"""The news pipeline example runs, offline and deterministic, as documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dagger_nb
from dagger_nb.examples import news_pipeline

EXPECTED = [
    "batteries: Analyst on batteries: what the numbers say. Forecaster on batteries: what comes next. "
    "Historian on batteries: how it started.",
    "chess engines: Analyst on chess engines: what the numbers say. Forecaster on chess engines: what comes "
    "next. Historian on chess engines: how it started.",
    "rivers: Analyst on rivers: what the numbers say. Forecaster on rivers: what comes next. "
    "Historian on rivers: how it started.",
]


def test_main_prints_one_summary_per_topic(capsys: pytest.CaptureFixture[str]) -> None:
    news_pipeline.main()
    assert capsys.readouterr().out.splitlines() == EXPECTED


def test_it_runs_as_a_module() -> None:
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-m", "dagger_nb.examples.news_pipeline"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == EXPECTED


@pytest.mark.anyio
async def test_the_pipeline_has_the_documented_shape() -> None:
    bus = news_pipeline.build()
    await bus.publish("requests", {"topics": ["tides"]})
    with pytest.raises(
        dagger_nb.SchemaValidationError, match=r"^channel 'requests': invalid payload at '\$.topics'"
    ):
        await bus.publish("requests", {"topics": []})
    await bus.run(until_idle=True)
    counts = bus.channels_frame().set_index("channel")["messages"].to_dict()
    assert counts == {"requests": 1, "topics": 1, "findings": 3, "summaries": 1}
    assert bus.dead_letters_frame().empty
    (summary,) = bus.history_frame("summaries")["payload"]
    assert summary["sources"] == ["analyst", "forecaster", "historian"]
    assert bus.cache.get("findings", "tides").keys() == {"analyst", "forecaster", "historian"}
    dot = bus.to_dot()
    for edge in ('"channel:topics" -> "agent:historian"', '"agent:collector" -> "channel:summaries"'):
        assert edge in dot
    bus.close()
