"""The one loop module: the no-loop error, the background owner, the thread hop and the sync facade."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from dagger_nb._loop import BackgroundGroup, LoopHop, call_soon_on, loop_is_running, require_loop, run_sync
from dagger_nb.errors import ExecutionError, NoRunningLoop

pytestmark = pytest.mark.anyio


def in_a_plain_thread(fn: Any) -> Any:
    """``fn()`` in a thread with no event loop; returns its result or the exception it raised."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return outcome[0]


def test_require_loop_names_the_call_and_the_synchronous_form() -> None:
    error = in_a_plain_thread(lambda: require_loop("Thing.start()", instead="thing.run_sync()"))
    assert isinstance(error, NoRunningLoop) and isinstance(error, ExecutionError)
    assert str(error) == (
        "Thing.start() needs a running event loop (a notebook cell or async code); in a script use thing.run_sync()"
    )


async def test_require_loop_returns_the_running_loop() -> None:
    assert require_loop("x", instead="y") is asyncio.get_running_loop()


def test_run_sync_in_a_script_runs_on_a_fresh_loop() -> None:
    async def where() -> bool:
        return loop_is_running()

    assert in_a_plain_thread(lambda: run_sync(where)) is True


async def test_run_sync_inside_a_running_loop_uses_a_private_loop_and_keeps_the_context() -> None:
    import contextvars

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker")
    marker.set("caller")
    caller_loop = asyncio.get_running_loop()

    async def probe(suffix: str) -> tuple[str, bool]:
        return marker.get() + suffix, asyncio.get_running_loop() is caller_loop

    assert run_sync(probe, "!") == ("caller!", False)


async def test_run_sync_re_raises_the_work_s_error() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_sync(fail)


async def test_background_group_owns_its_work_and_aclose_cancels_it() -> None:
    group = BackgroundGroup("probe")
    started, cancelled = anyio.Event(), []

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    group.submit(forever)
    await started.wait()
    assert group.running and group.loop is asyncio.get_running_loop()
    await group.aclose()
    assert cancelled == [True] and not group.running
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "dagger-nb probe"]


async def test_background_group_calls_on_drop_for_work_that_never_started() -> None:
    group = BackgroundGroup("probe")
    dropped: list[str] = []

    async def never() -> None:
        raise AssertionError("must not start")

    group.submit(never, on_drop=lambda: dropped.append("aclose"))
    await group.aclose()  # before the service task had a chance to start it
    group.submit(never, on_drop=lambda: dropped.append("close"))
    group.close()  # the synchronous form drops it too
    await anyio.lowlevel.checkpoint()
    assert dropped == ["aclose", "close"]


async def test_background_group_close_from_another_thread_cancels_on_the_loop() -> None:
    group = BackgroundGroup("probe")
    started, ended = anyio.Event(), anyio.Event()

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    group.submit(forever)
    await started.wait()
    await anyio.to_thread.run_sync(group.close)
    with anyio.fail_after(5):
        await ended.wait()


def test_background_group_without_a_loop_names_the_synchronous_form() -> None:
    async def work() -> None:
        return None

    def submit() -> None:
        BackgroundGroup("Probe").submit(work, instead="probe.run_sync()")

    error = in_a_plain_thread(submit)
    assert isinstance(error, NoRunningLoop)
    assert "Probe: starting work in the background needs a running event loop" in str(error)
    assert str(error).endswith("in a script use probe.run_sync()")


async def test_loop_hop_runs_a_worker_thread_s_call_on_the_loop_thread() -> None:
    hop = LoopHop()
    loop_thread = threading.get_ident()

    def where() -> int:
        return threading.get_ident()

    assert await anyio.to_thread.run_sync(hop.call, where) != loop_thread  # no run entered: runs in place
    with hop.entered():
        assert hop.call(where) == loop_thread
        assert await anyio.to_thread.run_sync(hop.call, where) == loop_thread

        async def async_where() -> int:
            return threading.get_ident()

        assert await anyio.to_thread.run_sync(hop.call_async, async_where) == loop_thread
        with pytest.raises(RuntimeError, match="for worker threads"):
            hop.call_async(async_where)
    assert not hop.off_loop


async def test_work_started_on_a_private_loop_does_not_hide_the_kernel_loop_s_work() -> None:
    """A ``run_sync`` inside the kernel starts work on its private loop; closing the group
    afterwards must still cancel what runs on the kernel's loop."""
    group = BackgroundGroup("probe")
    started, ended = anyio.Event(), anyio.Event()

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    async def on_the_private_loop() -> bool:
        ran = anyio.Event()

        async def quick() -> None:
            ran.set()

        group.submit(quick)
        await ran.wait()
        return group.loop is asyncio.get_running_loop()

    group.submit(forever)
    await started.wait()
    assert run_sync(on_the_private_loop) is True
    await group.aclose()
    assert ended.is_set() and not group.running


async def test_work_submitted_right_after_close_starts_on_a_new_service() -> None:
    """close() returns before the cancel reaches the service; a start() in the same step must
    not join the dying service (it would never run, nor be dropped)."""
    group = BackgroundGroup("probe")
    ran = anyio.Event()

    async def idle() -> None:
        await anyio.sleep_forever()

    async def mark() -> None:
        ran.set()

    group.submit(idle)
    await anyio.lowlevel.checkpoint()
    group.close()
    group.submit(mark)
    with anyio.fail_after(5):
        await ran.wait()
    await group.aclose()
    assert not group.running


def test_call_soon_on_runs_on_the_loop_s_thread_and_ignores_a_closed_loop() -> None:
    loop = asyncio.new_event_loop()
    seen: list[int] = []
    worker = threading.Thread(target=loop.run_forever)
    worker.start()
    try:
        done = threading.Event()
        call_soon_on(loop, lambda: (seen.append(threading.get_ident()), done.set()))
        assert done.wait(5)
        assert seen == [worker.ident]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        worker.join()
        loop.close()
    call_soon_on(loop, seen.append, "closed")  # nobody waits on a closed loop
    assert seen == [worker.ident]
    idle = asyncio.new_event_loop()
    call_soon_on(idle, seen.append, "idle")  # a loop that does not run: called in place
    idle.close()
    assert seen == [worker.ident, "idle"]
