"""No two attempts of one task overlap, even when the first one's thread was abandoned: its job
was cancelled and started again, or a later TaskManager took the file over (a re-run cell)."""

from __future__ import annotations

import itertools
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest

import dagger_nb

pytestmark = pytest.mark.anyio

WAITING = "waits for the abandoned thread of an earlier attempt to return"


async def wait_for(condition: Any, *, seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.005)


class Spans:
    """Each call of a sync agent: when it started and ended; the first one waits for ``release``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[list[float]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def agent(self, input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        with self.lock:
            span = [time.monotonic(), 0.0]
            self.calls.append(span)
            first = len(self.calls) == 1
        try:
            if first:
                self.first_started.set()
                self.release.wait(20)  # runs on after its attempt ended: abandoned
            return {"call": len(self.calls)}
        finally:
            span[1] = time.monotonic()

    def overlapping(self) -> bool:
        ordered = sorted(self.calls)
        return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(ordered))


def reason(manager: dagger_nb.TaskManager, task_id: str) -> str:
    task = manager.get_task(task_id)
    return "" if task is None else task.status_reason or ""


async def test_a_cancelled_jobs_thread_is_waited_for_when_the_job_starts_again() -> None:
    spans = Spans()
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("slow", spans.agent)
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        manager.add_objective("job", "slow", "slow", task_id="goal")
        first = manager.start("job")
        await anyio.to_thread.run_sync(spans.first_started.wait, 10)
        first.cancel()
        assert (await first.wait()).status is dagger_nb.JobStatus.CANCELLED

        second = manager.start("job")  # the first attempt's thread still runs
        await wait_for(lambda: reason(manager, "goal") == WAITING)
        assert len(spans.calls) == 1 and not second.done
        spans.release.set()
        report = await second.wait()
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert len(spans.calls) == 2
    assert not spans.overlapping()


async def test_a_later_manager_waits_for_the_thread_of_the_one_it_took_the_file_over_from(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    spans = Spans()
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("slow", spans.agent)
    earlier = dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None)
    earlier.add_objective("job", "slow", "slow", task_id="goal")
    first = earlier.start("job")
    await anyio.to_thread.run_sync(spans.first_started.wait, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dagger_nb.DaggerWarning)
        later = dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None)  # the re-run cell
    second = later.start("job")  # in the same step, before the earlier job saw its cancellation
    await wait_for(lambda: reason(later, "goal") == WAITING)
    assert len(spans.calls) == 1 and not second.done
    spans.release.set()
    report = await second.wait()
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert len(spans.calls) == 2
    assert not spans.overlapping()
    await wait_for(lambda: first.done)
    await earlier.aclose()
    await later.aclose()


async def test_a_later_manager_on_a_hard_link_waits_too(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    spans = Spans()
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("slow", spans.agent)
    earlier = dagger_nb.TaskManager(db, registry=registry, heartbeat_interval=None)
    earlier.add_objective("job", "slow", "slow", task_id="goal")
    earlier.start("job")
    await anyio.to_thread.run_sync(spans.first_started.wait, 10)
    link = tmp_path / "link.db"
    link.hardlink_to(db)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dagger_nb.DaggerWarning)
        later = dagger_nb.TaskManager(link, registry=registry, heartbeat_interval=None)
    second = later.start("job")
    await wait_for(lambda: reason(later, "goal") == WAITING)
    spans.release.set()
    assert (await second.wait()).status is dagger_nb.JobStatus.COMPLETED
    assert len(spans.calls) == 2 and not spans.overlapping()
    await earlier.aclose()
    await later.aclose()
