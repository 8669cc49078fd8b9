"""DagExecutor's verbs (``await run``, ``start``, ``run_sync``), its handle contract, and the old names."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import dagger_nb
from dagger_nb import ActionRegistry, DagExecutor, RunStatus
from dagger_nb.backends import LocalBackend
from dagger_nb.errors import NoRunningLoop, QuestionNotFound
from dagger_nb.handles import Handle
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio


@pytest.fixture
def registry() -> ActionRegistry:
    registry = ActionRegistry()
    registry.register("double", lambda x: 2 * x, inline=True)
    return registry


def pipeline() -> dagger_nb.WorkflowSpec:
    return workflow(
        "pipeline",
        {"id": "a", "action": "double", "inputs": [{"name": "x", "reference": "inputs.x"}]},
        {"id": "b", "action": "double", "inputs": [{"name": "x", "reference": "a.result"}]},
    )


def supervisor_registry() -> ActionRegistry:
    registry = ActionRegistry()
    registry.register("double", lambda x: 2 * x, inline=True)

    @dagger_nb.action(registry=registry)
    def supervisor_step(ctx: Any, iteration: int) -> int:  # one step that adds nothing ends the loop
        return iteration

    return registry


def in_a_plain_thread(call: Any) -> BaseException | None:
    """What ``call()`` raised in a thread where no event loop runs (as in a script)."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as error:  # handed to the test to check
            raised.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return raised[0] if raised else None


async def test_await_run_gives_the_report(registry: ActionRegistry) -> None:
    report = await executor_with(registry, pipeline()).run("pipeline", inputs={"x": 5})
    assert report.success and report.cache.get("b", "result") == 20


@pytest.mark.parametrize(("call", "what", "instead"), [
    (lambda ex: ex.run("pipeline", inputs={"x": 1}), "DagExecutor.run()", "executor.run_sync(...)"),
    (lambda ex: ex.run_agent_dag("task"), "DagExecutor.run_agent_dag()", "executor.run_agent_dag_sync(...)"),
    (lambda ex: ex.start_agent_dag("task"), "DagExecutor.start_agent_dag()", "executor.run_agent_dag_sync(...)"),
    (lambda ex: ex.start_resume("some-run"), "DagExecutor.start_resume()", "executor.resume_sync(...)"),
], ids=["run", "run_agent_dag", "start_agent_dag", "start_resume"])
def test_an_async_verb_in_a_script_names_the_synchronous_form(call: Any, what: str, instead: str) -> None:
    executor = executor_with(supervisor_registry(), pipeline())
    raised = in_a_plain_thread(lambda: call(executor))
    assert isinstance(raised, NoRunningLoop)
    assert str(raised) == (f"{what} needs a running event loop (a notebook cell or async code); "
                           f"in a script use {instead}")
    assert executor.runs_frame().empty  # nothing was started


def test_run_sync_and_run_agent_dag_sync_in_a_script(registry: ActionRegistry) -> None:
    assert executor_with(registry, pipeline()).run_sync("pipeline", inputs={"x": 2}).cache.get("b", "result") == 8
    report = DagExecutor(supervisor_registry()).run_agent_dag_sync("plan")
    assert report.success and list(report.outcomes) == ["supervisor_step_1"]


async def test_run_sync_and_run_agent_dag_sync_inside_a_running_loop(registry: ActionRegistry) -> None:
    assert executor_with(registry, pipeline()).run_sync("pipeline", inputs={"x": 3}).cache.get("b", "result") == 12
    assert DagExecutor(supervisor_registry()).run_agent_dag_sync("plan").success


async def test_await_run_agent_dag(registry: ActionRegistry) -> None:
    report = await DagExecutor(supervisor_registry()).run_agent_dag("plan")
    assert report.success and report.outcomes["supervisor_step_1"].status == "succeeded"


async def test_the_handle_satisfies_the_handle_protocol(registry: ActionRegistry) -> None:
    async with executor_with(registry, pipeline()) as executor:
        handle = executor.start("pipeline", inputs={"x": 1})
        assert isinstance(handle, Handle)
        assert handle.status is RunStatus.PENDING and handle.status == "pending"
        seen: list[object] = []
        handle.add_listener(seen.append)
        report = await handle
    assert handle.status is RunStatus.SUCCEEDED and handle.done and handle.error is None
    assert report.status == RunStatus.SUCCEEDED and f"{report.status}" == "succeeded"
    assert [type(event).__name__ for event in seen][-1] == "RunFinished"
    assert [status.value for status in RunStatus] == [
        "pending", "running", "succeeded", "failed", "paused", "cancelled", "interrupted"]


async def test_the_handle_error_is_the_storage_failure_that_ended_the_run(
    registry: ActionRegistry, tmp_path: Any
) -> None:
    executor = executor_with(registry, pipeline(), db=tmp_path / "runs.db")
    executor._store.close(reason="the test closed it")  # type: ignore[union-attr]
    async with executor:
        handle = executor.start("pipeline", inputs={"x": 1})
        report = await handle
    assert report.status == "failed" and isinstance(handle.error, dagger_nb.StorageError)
    assert str(handle.error) in report.error


class UnreachableCluster(LocalBackend):
    """A backend that sends calls ahead and cannot reach its cluster when a run begins."""

    async def prepare(self) -> None:
        raise OSError("cluster unreachable")

    def can_send(self, action: Any) -> bool:
        return True

    def send(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("never reached")

    def batch(self) -> None:
        return None

    def receive(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("never reached")

    async def discard(self, *args: Any) -> None:
        return None


@pytest.mark.parametrize("verb", ["run", "start"])
async def test_a_run_that_breaks_before_its_nodes_start_ends_failed_with_the_error(
    registry: ActionRegistry, verb: str
) -> None:
    async with executor_with(registry, pipeline(), backend=UnreachableCluster()) as executor:
        if verb == "run":
            report = await executor.run("pipeline", inputs={"x": 1})
            handle = executor.handle(report.run_id)
        else:
            handle = executor.start("pipeline", inputs={"x": 1})
            with anyio.fail_after(5):
                report = await handle
    assert report.status == "failed" and handle.status == "failed" and handle.done
    assert report.error == "the run could not go on: OSError: cluster unreachable"
    assert isinstance(handle.error, OSError)
    assert list(executor.runs_frame()["status"]) == ["failed"]


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_closing_the_executor_while_a_run_records_its_start_ends_it_cancelled(
    registry: ActionRegistry, tmp_path: Any, turns: int
) -> None:
    """Cancelled inside the first write to the store (or before it): the run must not read
    "running" for ever, and its handle must return."""
    executor = executor_with(registry, pipeline(), db=tmp_path / "runs.db")
    handle = executor.start("pipeline", inputs={"x": 1})
    for _ in range(turns):
        await anyio.lowlevel.checkpoint()
    await executor.aclose()
    with anyio.fail_after(5):
        report = await handle
    assert report.status == "cancelled" and handle.error is None


async def test_a_plain_thread_adds_nodes_to_a_running_run_through_its_loop(registry: ActionRegistry) -> None:
    gate = anyio.Event()

    @dagger_nb.action(registry=registry)
    async def gated() -> int:
        await gate.wait()
        return 1

    spec = workflow("grow", {"id": "g", "action": "gated"})
    async with executor_with(registry, spec) as executor:
        handle = executor.start("grow")
        added: list[str] = []
        async for event in handle.subscribe():
            if isinstance(event, dagger_nb.NodeStarted) and event.node == "g":
                # not an anyio worker thread: only the run's hop can carry the call to the loop
                thread = threading.Thread(target=lambda: added.append(handle.add_node(
                    "double", id="later", inputs={"x": "g.result"}, dependencies=["g"])))
                thread.start()
                await anyio.to_thread.run_sync(thread.join)
                gate.set()
        report = await handle
    assert added == ["later"] and report.cache.get("later", "result") == 2


async def test_answering_an_unknown_question_raises_question_not_found(registry: ActionRegistry) -> None:
    async with executor_with(registry, pipeline()) as executor:
        handle = executor.start("pipeline", inputs={"x": 1})
        with pytest.raises(QuestionNotFound, match=r"has no open question 'nope' \(open: none\)") as raised:
            handle.respond("nope", 1)
        await handle
    assert isinstance(raised.value, KeyError) and raised.value.request_id == "nope"


# -- the old names: each warns and does what the new one does --------------------------------------

async def test_execute_dag_is_a_deprecated_alias_of_run(registry: ActionRegistry) -> None:
    executor = executor_with(registry, pipeline())
    with pytest.warns(DeprecationWarning, match=r"execute_dag\(\) is deprecated; use DagExecutor\.run\(\)"):
        report = await executor.execute_dag("pipeline", inputs={"x": 5})
    assert report.cache.get("b", "result") == (await executor.run("pipeline", inputs={"x": 5})).cache.get("b", "result")


async def test_execute_agent_dag_is_a_deprecated_alias_of_run_agent_dag() -> None:
    executor = DagExecutor(supervisor_registry())
    with pytest.warns(DeprecationWarning, match=r"execute_agent_dag\(\) is deprecated; use DagExecutor\.run_agent_dag"):
        report = await executor.execute_agent_dag("plan")
    assert report.success and list(report.outcomes) == list((await executor.run_agent_dag("plan")).outcomes)


async def test_serialize_tree_to_dot_is_a_deprecated_alias_of_to_dot(registry: ActionRegistry) -> None:
    executor = executor_with(registry, pipeline())
    report = await executor.run("pipeline", inputs={"x": 1})
    with pytest.warns(DeprecationWarning, match=r"serialize_tree_to_dot\(\) is deprecated; use DagExecutor\.to_dot"):
        dot = executor.serialize_tree_to_dot(report.run_id)
    assert dot == executor.to_dot(report.run_id) and "digraph" in dot


async def test_runs_is_a_deprecated_alias_of_runs_frame(registry: ActionRegistry) -> None:
    executor = executor_with(registry, pipeline())
    await executor.run("pipeline", inputs={"x": 1})
    with pytest.warns(DeprecationWarning, match=r"runs\(\) is deprecated; use DagExecutor\.runs_frame\(\)"):
        frame = executor.runs()
    assert frame.equals(executor.runs_frame()) and len(frame) == 1


async def test_report_timeline_is_a_deprecated_alias_of_timeline_frame(registry: ActionRegistry) -> None:
    report = await executor_with(registry, pipeline()).run("pipeline", inputs={"x": 1})
    with pytest.warns(DeprecationWarning, match=r"timeline\(\) is deprecated; use timeline_frame\(\)"):
        frame = report.timeline()
    assert frame.equals(report.timeline_frame()) and list(frame["node"]) == ["a", "b"]


async def test_a_plain_thread_cancels_a_running_run(registry: ActionRegistry) -> None:
    started = anyio.Event()

    @dagger_nb.action(registry=registry)
    async def forever() -> int:
        started.set()
        await anyio.sleep_forever()
        return 1

    async with executor_with(registry, workflow("stuck", {"id": "s", "action": "forever"})) as executor:
        handle = executor.start("stuck")
        await started.wait()
        error = await anyio.to_thread.run_sync(in_a_plain_thread, handle.cancel)
        with anyio.fail_after(5):
            report = await handle
    assert error is None and report.status == "cancelled"
