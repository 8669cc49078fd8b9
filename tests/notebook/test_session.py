"""The kernel's Session: its verb trio (``await run``, ``start``, ``run_sync``), its life cycle, its sharing."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import anyio
import pytest

import dagger_nb
from dagger_nb.dag import RunHandle, RunStatus
from dagger_nb.errors import NoRunningLoop
from dagger_nb.handles import Handle
from dagger_nb.notebook import Session, session, use_session

pytestmark = pytest.mark.anyio


def doubling_session() -> Session:
    """A session with workflow ``w``: node ``a`` doubles ``inputs.x``."""
    new = Session(registry=dagger_nb.ActionRegistry())
    new.registry.register("double", lambda x: 2 * x)
    new.executor.add_workflow(dagger_nb.WorkflowSpec.model_validate(
        {"name": "w", "nodes": [{"id": "a", "action": "double", "inputs": [{"name": "x", "reference": "inputs.x"}]}]}
    ))
    return new


def forever_session() -> Session:
    """A session with workflow ``w`` whose one node sends SIGINT (a press on "interrupt") and never ends."""
    new = Session(registry=dagger_nb.ActionRegistry())

    async def forever() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await anyio.sleep_forever()

    new.registry.register("forever", forever)
    new.executor.add_workflow(dagger_nb.WorkflowSpec(name="w", nodes=[{"id": "a", "action": "forever"}]))
    return new


@pytest.fixture
async def doubling() -> AsyncIterator[Session]:
    new = doubling_session()
    yield new
    await new.aclose()


async def test_await_run_returns_the_report_of_a_run_of_the_session(doubling: Session) -> None:
    report = await doubling.run("w", inputs={"x": 4})
    assert report.status == "succeeded" and report.cache.get("a", "result") == 8
    assert list(doubling.runs) == [report.run_id]


async def test_start_returns_a_handle_at_once_and_remembers_it(doubling: Session) -> None:
    handle = doubling.start("w", inputs={"x": 5})
    assert isinstance(handle, RunHandle) and isinstance(handle, Handle)  # the contract of all three paradigms
    assert doubling.latest() is handle
    assert doubling.handle(handle.run_id) is handle
    report = await handle
    assert report.cache.get("a", "result") == 10
    assert handle.status is RunStatus.SUCCEEDED and handle.error is None


async def test_start_run_is_a_deprecated_alias_of_start(doubling: Session) -> None:
    with pytest.warns(DeprecationWarning, match=r"^Session\.start_run\(\) is deprecated; use Session\.start\(\)$"):
        handle = doubling.start_run("w", inputs={"x": 1})
    assert doubling.latest() is handle
    assert (await handle.wait()).cache.get("a", "result") == 2


async def test_run_sync_blocks_inside_a_running_loop(doubling: Session) -> None:
    # A cell without await: the test's loop runs, so the run goes on a private loop in a worker thread.
    report = doubling.run_sync("w", inputs={"x": 21})
    assert report.status == "succeeded" and report.cache.get("a", "result") == 42
    assert doubling.latest() is not None and doubling.latest().run_id == report.run_id  # type: ignore[union-attr]


async def test_wait_sync_calls_on_start_with_the_handle_then_waits(doubling: Session) -> None:
    seen: list[RunHandle] = []
    report = doubling.wait_sync(lambda: doubling.start("w", inputs={"x": 8}), on_start=seen.append)
    assert [handle.run_id for handle in seen] == [report.run_id] and seen[0].done
    assert report.cache.get("a", "result") == 16


def test_run_sync_in_a_script() -> None:
    new = doubling_session()
    report = new.run_sync("w", inputs={"x": 3})
    assert report.cache.get("a", "result") == 6


def test_start_without_a_running_loop_names_run_sync() -> None:
    new = doubling_session()
    with pytest.raises(NoRunningLoop, match=r"^Session\.start\(\) needs a running event loop \(a notebook cell or "
                                            r"async code\); in a script use session\.run_sync\(\.\.\.\)$"):
        new.start("w", inputs={"x": 3})
    assert new.runs == {}


def test_interrupting_run_sync_in_a_script_cancels_the_run() -> None:
    new = forever_session()
    with pytest.raises(KeyboardInterrupt):
        new.run_sync("w")
    latest = new.latest()
    assert latest is not None and latest.status == "cancelled"


async def test_interrupting_run_sync_inside_a_running_loop_cancels_the_run() -> None:
    new = forever_session()
    with pytest.raises(KeyboardInterrupt):
        new.run_sync("w")
    latest = new.latest()
    assert latest is not None and latest.status == "cancelled"


async def test_cancelling_the_task_awaiting_run_cancels_the_run() -> None:
    new = Session(registry=dagger_nb.ActionRegistry())
    began = anyio.Event()

    async def waits() -> None:
        began.set()
        await anyio.sleep_forever()

    new.registry.register("waits", waits)
    new.executor.add_workflow(dagger_nb.WorkflowSpec(name="w", nodes=[{"id": "a", "action": "waits"}]))
    async with anyio.create_task_group() as group:
        group.start_soon(new.run, "w")
        await began.wait()
        group.cancel_scope.cancel()
    # As with ``await executor.run(...)``: once the caller's cancellation is through, so is the run.
    latest = new.latest()
    assert latest is not None and latest.done and latest.status == "cancelled"
    await new.aclose()


async def test_two_runs_started_at_once_each_read_their_own_inputs() -> None:
    # The first run still waits when the second starts on the same session cache.
    new = Session(registry=dagger_nb.ActionRegistry())
    started, gate = [anyio.Event(), anyio.Event()], anyio.Event()

    async def hold() -> None:
        started.pop(0).set()
        await gate.wait()

    new.registry.register("hold", hold)
    seen: dict[str, object] = {}

    def read(x: object, ctx: dagger_nb.NodeContext) -> None:
        seen[ctx.run_id] = x

    new.registry.register("read", read)
    new.executor.add_workflow(dagger_nb.WorkflowSpec.model_validate({"name": "w", "nodes": [
        {"id": "hold", "action": "hold"},
        {"id": "read", "action": "read", "dependencies": ["hold"], "inputs": [{"name": "x", "reference": "inputs.x"}]},
    ]}))
    with anyio.fail_after(30):
        first_started, second_started = started
        one = new.start("w", inputs={"x": 1})
        await first_started.wait()
        two = new.start("w", inputs={"x": 2})
        await second_started.wait()
        gate.set()
        first, second = await one, await two
    assert first.success and second.success
    assert seen == {one.run_id: 1, two.run_id: 2}  # the shared cache keeps the latest outputs, not inputs
    await new.aclose()


async def test_aclose_cancels_background_runs() -> None:
    new = Session(registry=dagger_nb.ActionRegistry())
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    new.registry.register("forever", forever)
    new.executor.add_workflow(dagger_nb.WorkflowSpec(name="w", nodes=[{"id": "a", "action": "forever"}]))
    handle = new.start("w")
    await started.wait()
    await new.aclose()
    assert handle.status == "cancelled"


async def test_aclose_cancels_and_waits_for_a_background_run_started_before_a_run_sync() -> None:
    new = Session(registry=dagger_nb.ActionRegistry())
    started, ended = anyio.Event(), anyio.Event()

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    new.registry.register("forever", forever)
    new.registry.register("one", lambda: 1)
    new.executor.add_workflow(dagger_nb.WorkflowSpec(name="f", nodes=[{"id": "a", "action": "forever"}]))
    new.executor.add_workflow(dagger_nb.WorkflowSpec(name="o", nodes=[{"id": "a", "action": "one"}]))
    handle = new.start("f")
    await started.wait()
    assert new.run_sync("o").status == "succeeded"  # its run went on a private loop
    await new.aclose()
    assert ended.is_set() and handle.status == "cancelled"


def test_kernel_session_is_shared_and_replaceable() -> None:
    previous = use_session(None)
    try:
        first = session()
        assert session() is first and first.registry is dagger_nb.default_registry
        mine = Session()
        use_session(mine)
        assert session() is mine
    finally:
        use_session(previous)


def test_run_blocking_is_a_deprecated_alias_of_run_sync_in_a_script() -> None:
    from dagger_nb.notebook import run_blocking

    async def answer() -> int:
        await anyio.sleep(0)
        return 42

    with pytest.warns(DeprecationWarning, match=r"^dagger_nb\.notebook\.run_blocking\(\) is deprecated; use "
                                                r"Session\.run_sync\(\) or Session\.wait_sync\(\)$"):
        assert run_blocking(answer) == 42


async def test_run_blocking_inside_a_running_loop_calls_on_interrupt_and_reraises() -> None:
    from dagger_nb.notebook import run_blocking

    new = forever_session()  # its node presses "interrupt" while the cell blocks
    handles: list[RunHandle] = []

    async def run_w() -> object:
        handles.append(new.start("w"))
        return await handles[0]

    with (pytest.warns(DeprecationWarning, match=r"^dagger_nb\.notebook\.run_blocking\(\) is deprecated"),
          pytest.raises(KeyboardInterrupt)):
        run_blocking(run_w, on_interrupt=lambda: handles[0].cancel())
    assert handles[0].status == "cancelled"
