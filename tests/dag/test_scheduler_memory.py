"""What a run leaves behind per node: its times in one array, no small objects scattered over memory.

Small objects a run allocates one by one while its short-lived ones come and go (a float per
time, per node) pin the memory the run used after it ended; so a run keeps its nodes' times in
one array of floats, and every :class:`NodeOutcome` reads and writes its entry there.
"""

from __future__ import annotations

import copy
import pickle
import tracemalloc
from array import array
from dataclasses import replace
from pathlib import Path

import pytest

from dagger_nb import ActionRegistry
from dagger_nb.dag.report import NodeOutcome, pending_outcomes, share_clock
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio

SCHEDULER = str(Path(__file__).resolve().parents[2] / "dagger_nb" / "dag" / "scheduler.py")


def fanout(width: int) -> list[dict[str, object]]:
    nodes: list[dict[str, object]] = [{"id": "root", "action": "one"}]
    nodes += [{"id": f"c{i}", "action": "inc", "inputs": [{"name": "x", "reference": "root.result"}]}
              for i in range(width)]
    return nodes


async def test_a_finished_run_keeps_no_object_per_node_allocated_while_it_ran() -> None:
    registry = ActionRegistry()
    registry.register("one", lambda: 1, inline=True)
    registry.register("inc", lambda x: x + 1, inline=True)
    executor = executor_with(registry, workflow("wide", *fanout(2000), max_parallel_nodes=8))
    await executor.run("wide")  # first-use costs out of the way
    tracemalloc.start()
    try:
        report = await executor.run("wide")
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, SCHEDULER)])
    finally:
        tracemalloc.stop()
    assert report.success
    left = sum(stat.count for stat in snapshot.statistics("filename"))
    assert left < 100, f"{left} blocks allocated by the scheduler outlive a 2,001-node run"
    times = [(o.started_at, o.finished_at) for o in report.outcomes.values()]
    assert all(started is not None and finished is not None and started <= finished for started, finished in times)


def test_an_outcome_on_a_clock_reads_and_writes_its_entry() -> None:
    clock: array[float] = array("d")
    first, second = NodeOutcome("a", "act", started_at=1.0), NodeOutcome("b", "act")
    share_clock([first, second], clock)
    assert (first.started_at, first.finished_at, second.started_at) == (1.0, None, None)
    second.started_at, second.finished_at = 5.0, 7.5
    assert second.duration_s == 2.5
    assert list(clock[2:]) == [5.0, 7.5]
    second.finished_at = None
    assert second.finished_at is None and second.duration_s is None
    assert "started_at=5.0" in repr(second)


@pytest.mark.parametrize("make_copy", [
    lambda o: replace(o, notes=["copied"]),
    lambda o: pickle.loads(pickle.dumps(o)),
    copy.copy,
], ids=["replace", "pickle", "copy"])
def test_a_copy_of_an_outcome_has_its_own_times(make_copy: object) -> None:
    clock: array[float] = array("d")
    outcome = NodeOutcome("a", "act", started_at=1.0, finished_at=2.0)
    share_clock([outcome], clock)
    copied = make_copy(outcome)  # type: ignore[operator]
    copied.started_at = 9.0
    assert outcome.started_at == 1.0 and copied.started_at == 9.0
    assert copied.finished_at == 2.0
    assert outcome == replace(outcome)


def test_a_pending_outcome_made_for_a_new_run_equals_a_constructed_one() -> None:
    clock: array[float] = array("d", [1.0, 2.0])
    made = pending_outcomes([("a", "act"), ("b", "other")], clock)
    expected = NodeOutcome("b", "other")
    share_clock([expected], array("d"))
    assert made["b"] == expected and repr(made["b"]) == repr(expected)  # every field is set
    assert len(clock) == 6 and made["a"].started_at is None
    made["a"].started_at = 3.0
    assert clock[2] == 3.0 and made["b"].started_at is None
    assert not made["a"].notes and not made["a"].logs and not made["a"].retry_messages
