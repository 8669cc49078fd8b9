"""A timed-out sync attempt's thread runs on: no later attempt of its node overlaps it, whoever starts it."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import anyio
import pytest

from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.errors import DaggerWarning
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio


class Spans:
    """When each call of the slow action ran; the first call blocks until :attr:`gate` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.spans: list[list[float]] = []

    def slow(self) -> str:
        with self.lock:
            span = [time.monotonic(), 0.0]
            self.spans.append(span)
            first = len(self.spans) == 1
        if first:
            self.gate.wait(30)  # longer than the node's timeout: this attempt is abandoned
        span[1] = time.monotonic()
        return "done"

    def overlapping(self) -> bool:
        ordered = sorted(self.spans)
        return any(later[0] < earlier[1] or earlier[1] == 0.0 for earlier, later in itertools.pairwise(ordered))


@pytest.mark.parametrize("take_over", [False, True])
async def test_a_resumed_node_waits_for_its_abandoned_thread_even_after_a_take_over(
    tmp_path: Path, take_over: bool
) -> None:
    spans = Spans()
    registry = ActionRegistry()
    registry.register("slow", spans.slow)
    spec = workflow("slow", {"id": "s", "action": "slow", "timeout": 0.2}, max_attempts=1, on_failure="pause")
    db = tmp_path / "runs.db"
    first = executor_with(registry, spec, db=db)
    paused = await first.run("slow")
    assert paused.status == "paused" and len(spans.spans) == 1  # its thread is still in there

    if take_over:  # a re-run notebook cell: a new executor on the same file (through a symlink, even)
        link = tmp_path / "link.db"
        link.symlink_to(db)
        with pytest.warns(DaggerWarning, match="took over"):
            executor = DagExecutor(registry, db=link)
        executor.add_workflow(spec)
    else:
        executor = first
    handle = executor.start_resume(paused.run_id)
    with anyio.fail_after(10):
        while not any("waits for" in note for note in handle.snapshot().outcomes["s"].notes):
            await anyio.sleep(0.01)
    assert len(spans.spans) == 1  # the new attempt has not started while the old thread runs
    spans.gate.set()
    with anyio.fail_after(10):
        resumed = await handle
    assert resumed.status == "succeeded" and len(spans.spans) == 2
    assert not spans.overlapping(), spans.spans
    notes = resumed.outcomes["s"].notes
    assert any(note.startswith("attempt 1 started after attempt 1 of the run's previous start, abandoned")
               for note in notes), notes
    executor.close()
    first.close()
