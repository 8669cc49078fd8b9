"""The verb trio (``await run``, ``start``, ``run_sync``), the handle contract, and the old names."""

from __future__ import annotations

import html
import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest

import dagger_nb
from dagger_nb.handles import Handle

pytestmark = pytest.mark.anyio


def echo_manager(registry: dagger_nb.TaskAgentRegistry) -> tuple[dagger_nb.TaskManager, str]:
    registry.register("echo", lambda input, ctx: input)
    manager = dagger_nb.TaskManager(registry=registry, heartbeat_interval=None)
    return manager, manager.add_objective("job", "echo it", "echo", {"v": 1})


def deprecated(old: str, new: str) -> Any:
    return pytest.warns(
        DeprecationWarning, match=rf"TaskManager\.{old}\(\) is deprecated; use TaskManager\.{new}\(\)"
    )


async def test_a_job_handle_satisfies_the_handle_contract(registry: dagger_nb.TaskAgentRegistry) -> None:
    manager, task_id = echo_manager(registry)
    handle = manager.start("job")
    assert isinstance(handle, Handle)
    assert handle.status is dagger_nb.JobStatus.RUNNING and not handle.done and handle.error is None
    seen: list[dagger_nb.JobEvent] = []
    handle.add_listener(seen.append)
    report = await handle
    assert handle.done and handle.error is None
    assert handle.status is dagger_nb.JobStatus.COMPLETED and handle.status == "completed"
    assert report is await handle.wait() and report.outcomes[task_id].output.data == {"v": 1}  # type: ignore[union-attr]
    assert [type(event) for event in seen] == [
        dagger_nb.TaskStarted, dagger_nb.TaskCompleted, dagger_nb.JobFinished
    ]
    assert [type(event) async for event in handle.subscribe()][-1] is dagger_nb.JobFinished
    await manager.aclose()


async def test_run_sync_inside_a_running_loop_blocks_and_returns_the_report(
    registry: dagger_nb.TaskAgentRegistry,
) -> None:
    manager, task_id = echo_manager(registry)
    report = manager.run_sync("job")  # a private loop in a worker thread: this loop is not re-entered
    assert report.success and report.outcomes[task_id].output.data == {"v": 1}  # type: ignore[union-attr]
    assert manager.job_status("job") is dagger_nb.JobStatus.COMPLETED
    await manager.aclose()


async def test_cancel_from_another_thread_ends_the_job_cancelled(registry: dagger_nb.TaskAgentRegistry) -> None:
    started = anyio.Event()

    @dagger_nb.task_agent(name="forever", registry=registry)
    async def forever(input: dict[str, Any], ctx: dagger_nb.TaskContext) -> dict[str, Any]:
        started.set()
        await anyio.sleep_forever()
        return {}

    manager = dagger_nb.TaskManager(registry=registry, heartbeat_interval=None)
    task_id = manager.add_objective("job", "never ends", "forever")
    handle = manager.start("job")
    await started.wait()
    caller: list[int] = []

    def cancel_elsewhere() -> None:
        caller.append(threading.get_ident())
        handle.cancel()

    await anyio.to_thread.run_sync(cancel_elsewhere)
    assert caller != [threading.get_ident()]
    with anyio.fail_after(10):
        report = await handle
    assert report.status is dagger_nb.JobStatus.CANCELLED
    assert report.outcomes[task_id].status is dagger_nb.TaskStatus.PENDING
    await manager.aclose()


async def test_a_job_closed_before_it_started_ends_cancelled_at_once(registry: dagger_nb.TaskAgentRegistry) -> None:
    manager, task_id = echo_manager(registry)
    handle = manager.start("job")
    with anyio.fail_after(5):  # nothing left to wait for: the job never started
        await manager.aclose()
    assert handle.done and handle.status is dagger_nb.JobStatus.CANCELLED
    report = await handle
    assert report.outcomes[task_id].status is dagger_nb.TaskStatus.PENDING
    assert manager.running_jobs() == []


async def test_run_job_is_a_deprecated_alias_of_run(registry: dagger_nb.TaskAgentRegistry) -> None:
    manager, task_id = echo_manager(registry)
    with deprecated("run_job", "run") as warned:
        running = manager.run_job("job")
    assert warned[0].filename == __file__  # the warning points at the caller
    report = await running
    assert report.success and report.outcomes[task_id].output.data == {"v": 1}  # type: ignore[union-attr]
    await manager.aclose()


async def test_start_job_is_a_deprecated_alias_of_start(registry: dagger_nb.TaskAgentRegistry) -> None:
    manager, task_id = echo_manager(registry)
    with deprecated("start_job", "start") as warned:
        handle = manager.start_job("job")
    assert warned[0].filename == __file__
    assert isinstance(handle, dagger_nb.JobHandle)
    report = await handle
    assert report.success and report.outcomes[task_id].output.data == {"v": 1}  # type: ignore[union-attr]
    await manager.aclose()


def test_run_job_sync_is_a_deprecated_alias_of_run_sync(registry: dagger_nb.TaskAgentRegistry) -> None:
    manager, task_id = echo_manager(registry)
    with deprecated("run_job_sync", "run_sync") as warned:
        report = manager.run_job_sync("job")
    assert warned[0].filename == __file__
    assert report.success and report.outcomes[task_id].output.data == {"v": 1}  # type: ignore[union-attr]
    manager.close()


def test_get_dot_graph_is_a_deprecated_alias_of_to_dot(registry: dagger_nb.TaskAgentRegistry) -> None:
    manager, task_id = echo_manager(registry)
    with deprecated("get_dot_graph", "to_dot") as warned:
        dot = manager.get_dot_graph("job")
    assert warned[0].filename == __file__
    assert dot == manager.to_dot("job") and f'"{task_id}"' in dot
    with deprecated("get_dot_graph", "to_dot"):
        assert manager.get_dot_graph() == manager.to_dot()
    manager.close()


async def test_run_sync_of_one_job_leaves_the_loop_of_a_started_job_alone(
    registry: dagger_nb.TaskAgentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job started on this loop, then another job through ``run_sync`` (a private loop in a
    worker thread): changes to the first job still reach the first job's loop."""
    go = threading.Event()
    loop_thread = threading.get_ident()
    edit_threads: list[int] = []

    def waits_then_adds(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        go.wait(10)  # a worker thread of this loop; job b runs (or ran) on its private loop
        ctx.add_task("added by a's agent", "echo", {})
        return {}

    def lets_a_add(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        go.set()
        return {}

    registry.register("echo", lambda input, ctx: input)
    registry.register("waits_then_adds", waits_then_adds)
    registry.register("lets_a_add", lets_a_add)
    manager = dagger_nb.TaskManager(registry=registry, heartbeat_interval=None)
    manager.add_objective("a", "waits, then adds a task", "waits_then_adds")
    manager.add_objective("b", "lets a add its task", "lets_a_add")
    edits = type(manager._edits)
    original = edits._add_task

    def recording(self: Any, *args: Any) -> str:
        edit_threads.append(threading.get_ident())
        return original(self, *args)

    monkeypatch.setattr(edits, "_add_task", recording)
    handle = manager.start("a")
    running = anyio.Event()
    handle.add_listener(lambda event: running.set())
    await running.wait()  # a runs on this loop: its agent waits in a worker thread
    assert manager.run_sync("b").success
    later = manager.add_task("a", "added after b ended", "echo", {})  # the hop is a's, not b's ended loop
    report = await handle
    assert report.success and len(report.outcomes) == 3
    assert report.outcomes[later].status is dagger_nb.TaskStatus.COMPLETED
    assert edit_threads == [loop_thread, loop_thread]  # a's changes ran on a's loop, never on b's
    await manager.aclose()


class FullDisk:
    """Makes every task store write fail (as a full disk would) while ``full`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from dagger_nb.agents.store import TaskStore

        self.full = False
        save = TaskStore.save

        def failing_save(store: Any, *args: Any, **kwargs: Any) -> None:
            if self.full:
                raise dagger_nb.StorageError(f"cannot write tasks to '{store.path}': database or disk is full")
            save(store, *args, **kwargs)

        monkeypatch.setattr(TaskStore, "save", failing_save)


@pytest.mark.parametrize("verb", ["await run", "start", "run_sync"])
async def test_a_job_that_fails_as_a_whole_returns_a_failed_report_with_its_error(
    registry: dagger_nb.TaskAgentRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, verb: str
) -> None:
    """As a DAG run's and a pub/sub handle's: a storage failure under a running job is the
    report's ``error`` (status failed), not an exception out of ``wait()``."""
    disk = FullDisk(monkeypatch)

    def fills_the_disk(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        disk.full = True
        return {}

    registry.register("fills_the_disk", fills_the_disk)
    manager = dagger_nb.TaskManager(tmp_path / "tasks.db", registry=registry, heartbeat_interval=None)
    manager.add_objective("job", "fill the disk", "fills_the_disk")
    handle = None
    if verb == "await run":
        report = await manager.run("job")
    elif verb == "start":
        handle = manager.start("job")
        report = await handle
    else:
        report = manager.run_sync("job")
    assert report.status is dagger_nb.JobStatus.FAILED and not report.success
    assert report.error == f"cannot write tasks to '{tmp_path / 'tasks.db'}': database or disk is full"
    assert report.error in repr(report) and html.escape(report.error) in report._repr_html_()
    if handle is not None:
        assert handle.status is dagger_nb.JobStatus.FAILED and handle.done
        assert isinstance(handle.error, dagger_nb.StorageError) and str(handle.error) == report.error
    disk.full = False
    await manager.aclose()  # room again: what waited is written now
