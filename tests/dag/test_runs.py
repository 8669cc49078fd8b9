"""Running in the background, events, cancellation and the synchronous facade."""

from __future__ import annotations

import threading

import anyio
import pytest

import dagger_nb
from dagger_nb import ActionRegistry, ExecutionError, RunNotFound
from dagger_nb.dag import NodeWaiting
from dagger_nb.errors import NoRunningLoop
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


async def test_start_returns_at_once_and_the_handle_gives_the_report(registry: ActionRegistry) -> None:
    gate = anyio.Event()

    @dagger_nb.action(registry=registry)
    async def gated(x: int) -> int:
        await gate.wait()
        return x

    spec = workflow("gated", {"id": "g", "action": "gated", "inputs": [{"name": "x", "value": 3}]})
    async with executor_with(registry, spec) as executor:
        handle = executor.start("gated")
        assert handle.status == "pending" and handle.report is None and not handle.done
        assert handle.workflow == "gated" and handle.run_id
        events = []
        async for event in handle.subscribe():
            events.append(event)
            if isinstance(event, dagger_nb.NodeStarted):
                assert handle.status == "running"
                gate.set()
        report = await handle
        assert report is handle.report and report.success and handle.done
        assert await handle.wait() is report
    assert [type(e).__name__ for e in events] == ["NodeStarted", "NodeSucceeded", "RunFinished"]
    assert events[-1].report is report and events[1].outputs == {"result": 3}
    assert all(e.timestamp > 0 for e in events)


async def test_late_subscriber_receives_every_event_so_far(registry: ActionRegistry) -> None:
    async with executor_with(registry, pipeline()) as executor:
        handle = executor.start("pipeline", inputs={"x": 1})
        await handle
        events = [(type(e).__name__, getattr(e, "node", None)) async for e in handle.subscribe()]
    assert events == [("NodeStarted", "a"), ("NodeSucceeded", "a"), ("NodeStarted", "b"),
                      ("NodeSucceeded", "b"), ("RunFinished", None)]


async def test_cancel_event_ends_the_run_cancelled_promptly(registry: ActionRegistry) -> None:
    started = anyio.Event()

    @dagger_nb.action(registry=registry)
    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    spec = workflow("endless", {"id": "f", "action": "forever"}, {"id": "next", "action": "forever",
                    "dependencies": ["f"]})
    executor = executor_with(registry, spec)
    cancel = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _set_when(started, cancel))
        with anyio.fail_after(1):
            report = await executor.run("endless", cancel=cancel)
    assert report.status == "cancelled" and report.error == "the run was cancelled"
    assert report.outcomes["f"].status == "cancelled" and report.outcomes["next"].status == "pending"


async def _set_when(started: anyio.Event, cancel: anyio.Event) -> None:
    await started.wait()
    cancel.set()


async def test_handle_cancel_cancels_a_background_run(registry: ActionRegistry) -> None:
    release_thread = threading.Event()
    registry.register("blocking", lambda: release_thread.wait(10))
    spec = workflow("blocked", {"id": "b", "action": "blocking"})
    async with executor_with(registry, spec) as executor:
        handle = executor.start("blocked")
        async for event in handle.subscribe():
            if isinstance(event, dagger_nb.NodeStarted):
                handle.cancel()
        with anyio.fail_after(1):
            report = await handle
    release_thread.set()
    assert report.status == "cancelled" and handle.status == "cancelled"
    cancelled = [e for e in report.outcomes.values() if e.status == "cancelled"]
    assert [o.node for o in cancelled] == ["b"]


async def test_cancelling_the_caller_cancels_the_run_and_records_it(registry: ActionRegistry) -> None:
    started = anyio.Event()

    @dagger_nb.action(registry=registry)
    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    spec = workflow("interrupted", {"id": "f", "action": "forever"})
    executor = executor_with(registry, spec)
    async with anyio.create_task_group() as group:
        group.start_soon(executor.run, "interrupted")
        await started.wait()
        group.cancel_scope.cancel()  # what interrupting the kernel does to an awaited run
    runs = executor.runs_frame()
    assert runs.loc[0, "status"] == "cancelled"


async def test_aclose_cancels_background_runs(registry: ActionRegistry) -> None:
    @dagger_nb.action(registry=registry)
    async def forever() -> None:
        await anyio.sleep_forever()

    executor = executor_with(registry, workflow("endless", {"id": "f", "action": "forever"}))
    handle = executor.start("endless")
    with anyio.fail_after(1):
        await executor.aclose()
    assert handle.status == "cancelled"


async def test_run_works_inside_a_running_loop_on_a_private_loop(registry: ActionRegistry) -> None:
    executor = executor_with(registry, pipeline())
    report = executor.run_sync("pipeline", inputs={"x": 5})  # we are inside the test's event loop
    assert report.success and report.cache.get("b", "result") == 20


def test_run_works_in_a_plain_script(registry: ActionRegistry) -> None:
    report = executor_with(registry, pipeline()).run_sync("pipeline", inputs={"x": 1})
    assert report.cache.get("b", "result") == 4


def test_start_without_a_running_loop_says_what_to_do(registry: ActionRegistry) -> None:
    executor = executor_with(registry, pipeline())
    with pytest.raises(NoRunningLoop, match=r"^DagExecutor\.start\(\) needs a running event loop \(a notebook cell "
                       r"or async code\); in a script use executor\.run_sync\(\.\.\.\)$"):
        executor.start("pipeline")
    assert executor.runs_frame().empty  # refused before a run was made


async def test_handle_lookup_and_unknown_runs(registry: ActionRegistry) -> None:
    executor = executor_with(registry, pipeline())
    report = await executor.run("pipeline", inputs={"x": 1})
    assert executor.handle(report.run_id).report is report
    with pytest.raises(RunNotFound, match="no run with id 'nope'"):
        executor.handle("nope")
    with pytest.raises(RunNotFound, match="no run with id 'nope'"):
        await executor.resume("nope")


async def test_start_resume_continues_in_the_background(registry: ActionRegistry) -> None:
    attempts = {"count": 0}

    def fragile() -> str:
        attempts["count"] += 1
        if attempts["count"] == 1:
            raise RuntimeError("first run fails")
        return "ok"

    registry.register("fragile", fragile)
    spec = workflow("retry-later", {"id": "f", "action": "fragile", "onfailure": False})
    async with executor_with(registry, spec) as executor:
        first = await executor.run("retry-later")
        assert first.status == "paused"
        handle = executor.start_resume(first.run_id)
        report = await handle
    assert report.status == "succeeded" and report.run_id == first.run_id


async def test_runs_frame_lists_runs_newest_first(registry: ActionRegistry) -> None:
    executor = executor_with(registry, pipeline())
    first = await executor.run("pipeline", inputs={"x": 1})
    second = await executor.run("pipeline", inputs={"x": 2})
    frame = executor.runs_frame()
    assert list(frame.columns) == ["run_id", "workflow", "status", "started_at", "finished_at", "nodes",
                                   "failed", "error", "tokens"]
    assert list(frame["run_id"]) == [second.run_id, first.run_id]
    assert list(frame["nodes"]) == [2, 2]


async def test_each_run_gets_its_own_cache_unless_one_is_given(registry: ActionRegistry) -> None:
    executor = executor_with(registry, pipeline())
    shared = dagger_nb.Cache()
    one = await executor.run("pipeline", shared, inputs={"x": 1})
    two = await executor.run("pipeline", inputs={"x": 2})
    assert one.cache.shared is shared and two.cache.shared is not shared
    assert shared.get("b", "result") == 4 and two.cache.get("b", "result") == 8


async def test_limited_cache_never_evicts_what_a_pending_node_needs(registry: ActionRegistry) -> None:
    registry.register("make", lambda ctx: ctx.node, inline=True)
    registry.register("join", lambda **parts: "+".join(sorted(v for k, v in parts.items() if k != "ctx")), inline=True)
    nodes = [{"id": f"p{i}", "action": "make"} for i in range(6)]
    nodes.append({"id": "join", "action": "join",
                  "inputs": [{"name": f"x{i}", "reference": f"p{i}.result"} for i in range(6)]})
    spec = workflow("fan-in", *nodes, max_parallel_nodes=1)
    cache = dagger_nb.Cache(dagger_nb.CacheConfig(max_entries=2))
    report = await executor_with(registry, spec).run("fan-in", cache)
    assert report.success, report.error
    assert report.cache.get("join", "result") == "p0+p1+p2+p3+p4+p5"
    assert len(cache) == 2 and cache.contains("join", "result")  # evicted once nobody needs them


async def test_a_listener_that_raises_is_removed_and_the_run_goes_on(registry: ActionRegistry) -> None:
    def broken_dashboard(event: object) -> None:
        raise ValueError("widget bug")

    async with executor_with(registry, pipeline()) as executor:
        handle = executor.start("pipeline", inputs={"x": 1})
        handle.add_listener(broken_dashboard)
        with pytest.warns(dagger_nb.DaggerWarning, match="raised ValueError\\('widget bug'\\); it was removed"):
            report = await handle
    assert report.success


async def test_a_run_cannot_be_resumed_twice_at_once_and_reports_stay_as_they_were(
    registry: ActionRegistry,
) -> None:
    calls = {"n": 0}

    def fails_once() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return "ok"

    registry.register("fails_once", fails_once)
    async with executor_with(registry, workflow("w", {"id": "a", "action": "fails_once", "onfailure": False})) as ex:
        first = await ex.run("w")
        handle = ex.start_resume(first.run_id)
        with pytest.raises(ExecutionError, match="is still running in this process"):
            ex.start_resume(first.run_id)
        assert (await handle).success
    assert first.status == "paused" and first.outcomes["a"].status == "failed"  # the record did not change
    assert calls["n"] == 2


async def test_aclose_works_again_after_new_runs(registry: ActionRegistry) -> None:
    @dagger_nb.action(registry=registry)
    async def forever() -> None:
        await anyio.sleep_forever()

    executor = executor_with(registry, workflow("endless", {"id": "f", "action": "forever"}))
    for _ in range(2):
        handle = executor.start("endless")
        with anyio.fail_after(2):
            await executor.aclose()
        assert handle.status == "cancelled"


INTERRUPT_SCRIPT = """
import asyncio, os, signal, threading, dagger_nb
registry = dagger_nb.ActionRegistry()
started, first_started = [], threading.Event()

@dagger_nb.action(registry=registry)
async def step(ctx):
    started.append(ctx.node)
    first_started.set()
    await asyncio.sleep(60)

executor = dagger_nb.DagExecutor(registry)
executor.load_yaml("name: chain\\nnodes:\\n  - {id: a, action: step}\\n  - {id: b, action: step, dependencies: [a]}\\n")
threading.Thread(target=lambda: (first_started.wait(), os.kill(os.getpid(), signal.SIGINT))).start()

async def cell():  # a notebook cell calling the synchronous form inside the kernel's loop
    try:
        executor.run_sync("chain")
    except KeyboardInterrupt:
        print("interrupted", started, executor.runs_frame().loc[0, "status"])

# Like ipykernel (and unlike asyncio.run), no SIGINT handler: Ctrl-C raises KeyboardInterrupt in the cell.
asyncio.new_event_loop().run_until_complete(cell())
"""


def test_interrupting_a_synchronous_run_inside_a_loop_cancels_it() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", INTERRUPT_SCRIPT], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.stdout.strip() == "interrupted ['a'] cancelled", result.stderr


# -- attempts: never two at once, never a frozen loop --------------------------------------------


async def test_attempts_of_a_timed_out_sync_action_never_overlap() -> None:
    registry = ActionRegistry()
    lock = threading.Lock()
    running = {"now": 0, "most": 0, "calls": 0}

    def slow() -> None:
        with lock:
            running["now"] += 1
            running["calls"] += 1
            running["most"] = max(running["most"], running["now"])
        threading.Event().wait(0.5)  # the slow work itself, longer than the node's timeout
        with lock:
            running["now"] -= 1

    registry.register("slow", slow)
    spec = workflow("slow", {"id": "s", "action": "slow", "timeout": 0.1, "try_count": 4},
                    retry_strategy="Immediate")
    executor = executor_with(registry, spec)
    handle = executor.start("slow")
    seen: list[tuple[object, ...]] = []

    def listen(event: object) -> None:
        if isinstance(event, dagger_nb.NodeRetrying):
            # recorded as timed out at once: the abandoned attempt is still in its thread
            seen.append(("retrying while the attempt still runs", running["now"]))
        elif isinstance(event, NodeWaiting):
            notes = handle.snapshot().outcomes["s"].notes
            seen.append(("waiting", event.abandoned_attempt, bool(notes) and "waits for attempt" in notes[-1]))

    handle.add_listener(listen)
    with anyio.fail_after(20):
        report = await handle
    assert running["most"] == 1 and running["calls"] == 4
    outcome = report.outcomes["s"]
    assert outcome.status == "failed" and outcome.attempts == 4
    assert outcome.retry_messages == [
        f"Attempt {n} failed: node 's' timed out after 0.1s (attempt {n})" for n in range(1, 5)
    ]
    assert seen == [
        ("retrying while the attempt still runs", 1), ("waiting", 1, True),
        ("retrying while the attempt still runs", 1), ("waiting", 2, True),
        ("retrying while the attempt still runs", 1), ("waiting", 3, True),
    ]
    assert sum("returned from its thread" in note for note in outcome.notes) == 3


async def test_immediate_retries_of_an_action_that_never_awaits_can_be_cancelled_at_once() -> None:
    registry = ActionRegistry()

    async def fail_at_once() -> None:
        raise RuntimeError("no")

    registry.register("fail", fail_at_once)
    spec = workflow("busy", {"id": "f", "action": "fail", "try_count": 1000}, retry_strategy="Immediate")
    executor = executor_with(registry, spec)
    handle = executor.start("busy")

    def cancel_on_attempt_20(event: object) -> None:
        if isinstance(event, dagger_nb.NodeRetrying) and event.attempt == 20:
            handle.cancel()

    handle.add_listener(cancel_on_attempt_20)
    with anyio.fail_after(5):
        report = await handle
    assert report.status == "cancelled"
    assert report.outcomes["f"].attempts < 25  # not after the last of the 1,000 attempts


async def test_the_run_timeout_stops_a_retry_loop_that_never_awaits() -> None:
    registry = ActionRegistry()

    async def busy_fail() -> None:
        threading.Event().wait(0.002)  # blocks the loop a little, as a CPU-bound step does
        raise RuntimeError("no")

    registry.register("fail", busy_fail)
    spec = workflow("busy", {"id": "f", "action": "fail", "try_count": 1000}, retry_strategy="Immediate",
                    timeout_seconds=0.1)
    started = anyio.current_time()
    report = await executor_with(registry, spec).run("busy")
    assert report.status == "failed" and "timed out" in (report.error or "")
    assert anyio.current_time() - started < 1.0  # 1,000 attempts take over 2 s
    assert report.outcomes["f"].attempts < 500


async def test_retry_messages_keep_the_first_and_last_attempts_and_count_the_rest() -> None:
    registry = ActionRegistry()
    calls = iter(range(1, 1000))
    registry.register("fail", lambda: (_ for _ in ()).throw(RuntimeError(f"call {next(calls)}")), inline=True)
    spec = workflow("many", {"id": "f", "action": "fail", "try_count": 50}, retry_strategy="Immediate")
    report = await executor_with(registry, spec).run("many")
    messages = report.outcomes["f"].retry_messages
    assert messages == [
        "Attempt 1 failed: RuntimeError: call 1",
        "Attempt 2 failed: RuntimeError: call 2",
        "Attempt 3 failed: RuntimeError: call 3",
        "... 42 more attempts failed (not shown)",
        *(f"Attempt {n} failed: RuntimeError: call {n}" for n in range(46, 51)),
    ]
    assert report.outcomes["f"].error == "Failed after 50 attempts. Last error: RuntimeError: call 50"


# -- memory ---------------------------------------------------------------------------------------


async def test_only_the_latest_finished_runs_stay_in_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import gc
    import weakref

    registry = ActionRegistry()
    registry.register("big", lambda: bytearray(1_000_000))
    registry.register("fail", lambda: 1 / 0)
    spec = workflow("big", {"id": "b", "action": "big"})
    failing = workflow("failing", {"id": "f", "action": "fail", "onfailure": False})
    executor = executor_with(registry, spec, failing, db=tmp_path / "runs.db", keep_runs=2)
    paused = (await executor.run("failing")).run_id
    caches = []
    for _ in range(4):
        report = await executor.run("big")
        caches.append(weakref.ref(report.cache))
        del report
    gc.collect()
    assert [ref() is None for ref in caches] == [True, True, True, True]  # nobody held them (tests/dag/test_memory.py)
    assert len(executor._runs) == 2
    with pytest.raises(RunNotFound):
        executor.handle(paused)
    assert len(executor.runs_frame()) == 5  # the file still lists every run
    assert "digraph" in executor.to_dot(paused)
    registry.register("fail", lambda: "fixed")
    assert (await executor.resume(paused)).status == "succeeded"
    executor.close()


def test_keep_runs_must_be_a_positive_count() -> None:
    with pytest.raises(ExecutionError, match="keep_runs must be a positive whole number, got 0"):
        dagger_nb.DagExecutor(keep_runs=0)
