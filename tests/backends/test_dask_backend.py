"""What the Dask backend adds: where actions run, ctx on a worker, cancellation, dead workers, big data.

Actions run in other processes, so they report back through the cluster
(``distributed.Queue``/``Event``) or through files under ``tmp_path``, never
through state captured in the test's process.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
from typing import Any

import anyio
import pandas as pd
import pytest

import dagger_nb
from dagger_nb import ActionRegistry
from dagger_nb._callables import Callee
from dagger_nb.backends import Backend, LocalBackend
from dagger_nb.backends.dask import DaskBackend
from tests.dag.helpers import executor_with, workflow

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.anyio


def workers(client: Any) -> set[str]:
    return set(client.scheduler_info()["workers"])


async def receive(queue: Any, timeout: float = 10) -> Any:
    """The next item of a cluster-wide queue (waited for in a thread: the test's client is synchronous)."""
    return await anyio.to_thread.run_sync(lambda: queue.get(timeout=timeout))


def scheduler_keys(client: Any) -> list[str]:
    """Every key the scheduler knows, once it has seen every message the client sent so far."""
    # Cancels and releases travel on the client's batched stream, in order: a task submitted
    # after them and finished means the scheduler has handled them.
    client.submit(int, 0, pure=False).result()
    return client.run_on_scheduler(lambda dask_scheduler: [str(key) for key in dask_scheduler.tasks])


def held_keys(client: Any, prefix: str) -> list[str]:
    """Keys starting with ``prefix`` that the notebook's client still holds a future of."""
    gc.collect()  # no future may survive in garbage either: only a collection would free it

    async def held() -> list[str]:
        # A future lets go of its key through a callback on the client's loop: this runs after those.
        return [str(key) for key in client.refcount if str(key).startswith(prefix)]

    return client.sync(held)


def unique(name: str) -> str:
    return f"{name}-{os.urandom(6).hex()}"


# -- where and how actions run -------------------------------------------------------------------------

async def test_chain_runs_on_workers_with_one_key_prefix_per_action(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    @dagger_nb.action(registry=registry)
    def add(a: int, b: int) -> dict[str, Any]:
        worker = distributed.get_worker()
        return {"sum": a + b, "pid": os.getpid(), "key": worker.get_current_task()}

    spec = workflow(
        "chain",
        {"id": "one", "action": "add", "inputs": [{"name": "a", "reference": "inputs.x"}, {"name": "b", "value": 1}]},
        {"id": "two", "action": "add", "inputs": [{"name": "a", "reference": "one.sum"}, {"name": "b", "value": 10}]},
    )
    report = await executor_with(registry, spec, backend=backend).run("chain", inputs={"x": 5})
    assert report.success, report.error
    assert report.cache.get("two", "sum") == 16
    assert {report.cache.get(n, "pid") for n in ("one", "two")}.isdisjoint({os.getpid()})
    keys = [report.cache.get(n, "key") for n in ("one", "two")]
    assert [dask.utils.key_split(key) for key in keys] == ["add", "add"] and keys[0] != keys[1]
    assert {o.worker for o in report.outcomes.values()} <= workers(dask_client)
    # where each node ran is in the report's table and its HTML, as on the dashboard
    assert set(report.to_frame()["worker"]) == {o.worker for o in report.outcomes.values()}
    html = report._repr_html_()
    assert "<th>worker</th>" in html and all(f"<td>{o.worker}</td>" in html for o in report.outcomes.values())


async def test_async_actions_run_on_the_worker_loop_and_sync_ones_in_its_threads(
    registry: ActionRegistry, backend: DaskBackend
) -> None:
    @dagger_nb.action(registry=registry)
    async def on_loop() -> bool:
        import asyncio

        return asyncio.get_running_loop() is distributed.get_worker().loop.asyncio_loop

    @dagger_nb.action(registry=registry)
    def in_thread() -> bool:
        return threading.current_thread() is not threading.main_thread() and os.getpid() != TEST_PID

    registry.register("in_thread_pid", lambda: os.getpid())
    spec = workflow("where", {"id": "a", "action": "on_loop"}, {"id": "s", "action": "in_thread"})
    report = await executor_with(registry, spec, backend=backend).run("where")
    assert report.cache.namespace("a") == {"result": True}
    assert report.cache.namespace("s") == {"result": True}


TEST_PID = os.getpid()


async def test_functions_defined_in_a_notebook_cell_work(registry: ActionRegistry, backend: DaskBackend) -> None:
    cell: dict[str, Any] = {"__name__": "__main__"}
    exec("SUFFIX = '!'\ndef shout(text):\n    return text.upper() + SUFFIX\n", cell)  # what a cell does
    registry.register("shout", cell["shout"])
    spec = workflow("cell", {"id": "s", "action": "shout", "inputs": [{"name": "text", "value": "hi"}]})
    report = await executor_with(registry, spec, backend=backend).run("cell")
    assert report.cache.get("s", "result") == "HI!"


async def test_ctx_on_a_worker_is_a_copy_whose_writes_come_back(registry: ActionRegistry, backend: DaskBackend) -> None:
    @dagger_nb.action(registry=registry)
    async def add(num1: float, num2: float, ctx: dagger_nb.NodeContext) -> None:
        dagger_nb.insert_value(ctx.cache, ctx.node, "sum", num1 + num2)

    @dagger_nb.action(registry=registry)
    def square(ctx: dagger_nb.NodeContext) -> dict[str, Any]:
        value = dagger_nb.get_value(ctx.cache, "a", "sum")  # the node's referenced inputs are in ctx.cache
        ctx.output("squared", value * value)
        return {"seen": (ctx.node, ctx.workflow, ctx.attempt, ctx.inputs, ctx.executor, bool(ctx.run_id))}

    spec = workflow(
        "rust",
        {"id": "a", "action": "add", "outputs": [{"name": "sum"}],
         "inputs": [{"name": "num1", "reference": "inputs.num1"}, {"name": "num2", "reference": "inputs.num2"}]},
        {"id": "b", "action": "square", "inputs": [{"name": "x", "reference": "a.sum"}]},
    )
    cache = dagger_nb.Cache()
    executor = executor_with(registry, spec, backend=backend)
    report = await executor.run("rust", cache, inputs={"num1": 2.0, "num2": 3.0})
    assert report.success, report.error
    assert dagger_nb.get_value(cache, "b", "squared") == 25.0
    assert cache.get("b", "seen") == ("b", "rust", 1, {"x": 5.0}, None, True)


async def test_ctx_on_a_worker_reads_its_own_runs_inputs(registry: ActionRegistry, backend: DaskBackend) -> None:
    """Two runs at once on one cache: the copy of ``ctx`` each worker gets holds its own run's
    inputs, the bare legacy reference included, read the way the executor reads them."""
    references = [{"name": "x", "reference": "inputs.x"}, {"name": "y", "reference": "y"}]

    @dagger_nb.action(registry=registry)
    def read(ctx: dagger_nb.NodeContext) -> None:
        specs = [dagger_nb.InputSpec.model_validate(item) for item in references]
        found = [dagger_nb.parse_input_from_name(ctx.cache, name, specs) for name in ("x", "y")]
        ctx.output(f"seen_{ctx.run_id}", (found, ctx.cache.namespace("inputs"), os.getpid() != TEST_PID))

    spec = workflow("reads", {"id": "r", "action": "read", "inputs": references})
    executor = executor_with(registry, spec, backend=backend)
    shared = dagger_nb.Cache()
    first = executor.start("reads", inputs={"x": 1, "y": "one"}, cache=shared)
    second = executor.start("reads", inputs={"x": 2, "y": "two"}, cache=shared)
    one, two = await first, await second
    assert one.success and two.success, (one.error, two.error)
    assert shared.get("r", f"seen_{one.run_id}") == ([1, "one"], {"x": 1, "y": "one"}, True)
    assert shared.get("r", f"seen_{two.run_id}") == ([2, "two"], {"x": 2, "y": "two"}, True)
    assert "inputs" not in shared.namespaces()


async def test_try_count_retries_count_attempts_on_the_cluster(
    registry: ActionRegistry, backend: DaskBackend, tmp_path: Any
) -> None:
    counter = tmp_path / "attempts"

    @dagger_nb.action(registry=registry)
    def flaky(ctx: dagger_nb.NodeContext) -> str:
        with open(counter, "a") as file:
            file.write(f"{ctx.attempt}\n")
        if ctx.attempt < 3:
            raise ValueError(f"boom {ctx.attempt}")
        return "ok"

    spec = workflow("retry", {"id": "f", "action": "flaky", "try_count": 3}, retry_strategy="Immediate")
    report = await executor_with(registry, spec, backend=backend).run("retry")
    outcome = report.outcomes["f"]
    assert report.success and outcome.attempts == 3
    assert outcome.retry_messages == ["Attempt 1 failed: ValueError: boom 1", "Attempt 2 failed: ValueError: boom 2"]
    assert counter.read_text().split() == ["1", "2", "3"]


async def test_failure_handler_runs_on_the_cluster_with_ctx_and_error(
    registry: ActionRegistry, backend: DaskBackend, tmp_path: Any
) -> None:
    log = tmp_path / "handled"

    def bad() -> None:
        raise RuntimeError("broken")

    def on_bad(ctx: dagger_nb.NodeContext, error: str) -> None:
        with open(log, "a") as file:
            file.write(f"{ctx.node}|{error}\n")

    registry.register("bad", bad)
    registry.register("on_bad", on_bad)
    spec = workflow("handled", {"id": "n", "action": "bad", "failure": "on_bad", "try_count": 2},
                    retry_strategy="Immediate", on_failure="stop")
    report = await executor_with(registry, spec, backend=backend).run("handled")
    assert log.read_text() == "n|Failed after 2 attempts. Last error: RuntimeError: broken\n"
    assert report.outcomes["n"].notes == []


async def test_failed_attempts_still_record_the_worker(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    registry.register("bad", lambda: 1 / 0)
    spec = workflow("bad", {"id": "n", "action": "bad", "onfailure": False}, on_failure="stop")
    outcome = (await executor_with(registry, spec, backend=backend).run("bad")).outcomes["n"]
    assert outcome.error == "Failed after 1 attempt. Last error: ZeroDivisionError: division by zero"
    assert outcome.worker in workers(dask_client)


async def test_an_asynchronous_client_on_the_same_loop_works(registry: ActionRegistry, dask_cluster: Any) -> None:
    registry.register("double", lambda x: 2 * x)
    spec = workflow("double", {"id": "d", "action": "double", "inputs": [{"name": "x", "value": 21}]})
    async with distributed.Client(dask_cluster.scheduler_address, asynchronous=True) as client:
        report = await executor_with(registry, spec, backend=DaskBackend(client)).run("double")
    assert report.cache.get("d", "result") == 42
    assert report.outcomes["d"].worker is not None


async def test_the_notebook_lets_go_of_every_future_once_its_node_is_done(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    def refuse(x: int) -> int:
        raise ValueError(f"refused {x}")

    registry.register("offer", lambda: 1)
    registry.register("refuse", refuse)
    spec = workflow(
        "let-go",
        {"id": "offer", "action": "offer"},
        {"id": "refuse", "action": "refuse", "try_count": 2, "inputs": [{"name": "x", "reference": "offer.result"}]},
        retry_strategy="Immediate",
    )
    report = await executor_with(registry, spec, backend=backend).run("let-go")
    assert report.outcomes["refuse"].error == "Failed after 2 attempts. Last error: ValueError: refused 1"
    # held futures would keep their results (and errors) in the cluster's memory
    assert held_keys(dask_client, "offer-") == held_keys(dask_client, "refuse-") == []


# -- timeouts and cancellation reach the cluster ---------------------------------------------------------

def hang_until_cancelled(queue_name: str, name: str) -> Any:
    async def hang() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await distributed.Queue(queue_name).put(f"{name} cancelled")
            raise

    return hang


async def test_a_timeout_cancels_the_future_and_the_async_action_on_the_worker(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    queue = distributed.Queue(unique("cancelled"), client=dask_client)
    registry.register("hang", hang_until_cancelled(queue.name, "hang"))
    spec = workflow("slow", {"id": "h", "action": "hang", "timeout": 0.5, "onfailure": False}, on_failure="stop")
    with anyio.fail_after(1.5):  # reported within a second of the timeout
        report = await executor_with(registry, spec, backend=backend).run("slow")
    assert report.outcomes["h"].error == "Failed after 1 attempt. Last error: node 'h' timed out after 0.5s (attempt 1)"
    assert await receive(queue) == "hang cancelled"  # the action's coroutine was cancelled on its worker
    assert not [key for key in scheduler_keys(dask_client) if key.startswith("hang-")]


async def test_cancelling_a_run_cancels_its_future_even_for_a_blocking_sync_action(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    started = distributed.Queue(unique("started"), client=dask_client)
    release = distributed.Event(unique("release"), client=dask_client)

    def block(ctx: dagger_nb.NodeContext) -> None:
        distributed.Queue(started.name).put(distributed.get_worker().get_current_task())
        distributed.Event(release.name).wait(10)  # a thread cannot be killed: it runs to its end

    registry.register("block", block)
    spec = workflow("blocked", {"id": "b", "action": "block"})
    async with executor_with(registry, spec, backend=backend) as executor:
        handle = executor.start("blocked")
        key = await receive(started)
        handle.cancel()
        with anyio.fail_after(1):
            report = await handle
    try:
        assert report.status == "cancelled" and report.outcomes["b"].status == "cancelled"
        assert key not in scheduler_keys(dask_client)
    finally:
        release.set()


async def test_on_failure_stop_cancels_the_other_running_node_on_the_cluster(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    cancelled = distributed.Queue(unique("cancelled"), client=dask_client)
    started = distributed.Event(unique("started"), client=dask_client)

    def slow_then_signal() -> Any:
        hang = hang_until_cancelled(cancelled.name, "slow")

        async def slow() -> None:
            await distributed.Event(started.name).set()
            await hang()

        return slow

    async def fail_after_slow_started() -> None:
        await distributed.Event(started.name).wait()
        raise RuntimeError("broken")

    registry.register("slow", slow_then_signal())
    registry.register("bad", fail_after_slow_started)
    registry.register("noop", lambda: None)
    spec = workflow(
        "stop",
        {"id": "slow", "action": "slow"},
        {"id": "bad", "action": "bad", "onfailure": False},
        {"id": "later", "action": "noop", "dependencies": ["bad"]},
        on_failure="stop", max_parallel_nodes=2,
    )
    report = await executor_with(registry, spec, backend=backend).run("stop")
    assert report.error == "node 'bad' failed: Failed after 1 attempt. Last error: RuntimeError: broken"
    statuses = {n: o.status for n, o in report.outcomes.items()}
    assert statuses == {"slow": "cancelled", "bad": "failed", "later": "pending"}
    assert await receive(cancelled) == "slow cancelled"


# -- a worker dies mid-action ------------------------------------------------------------------------------

@pytest.mark.parametrize("allowed_failures", [3, 0])
async def test_a_scheduler_that_reruns_dead_workers_tasks_is_warned_about(
    registry: ActionRegistry, allowed_failures: int, recwarn: pytest.WarningsRecorder
) -> None:
    registry.register("one", lambda: 1)
    spec = workflow("w", {"id": "n", "action": "one"})
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = await distributed.LocalCluster(
            n_workers=1, processes=False, dashboard_address=":0", asynchronous=True
        )
    async with cluster, distributed.Client(cluster, asynchronous=True) as client:
        executor = executor_with(registry, spec, backend=DaskBackend(client))
        assert (await executor.run("w")).success
        assert (await executor.run("w")).success  # checked once per backend
    warned = [str(w.message) for w in recwarn if issubclass(w.category, dagger_nb.DaggerWarning)]
    if allowed_failures:
        assert warned == [
            "the Dask scheduler reruns a task whose worker died up to 3 times (distributed.scheduler.allowed-failures) "
            "before the attempt sees the death, so a node's try_count (a task's max_retries) does not decide alone; "
            "create the scheduler with allowed-failures=0 (see docs/dask.md, 'A worker that dies')"
        ]
    else:
        assert warned == []


async def test_a_worker_killed_mid_action_is_a_failed_attempt_retried_on_another_worker(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    running = distributed.Queue(unique("running"), client=dask_client)

    def fragile(ctx: dagger_nb.NodeContext) -> str:
        worker = distributed.get_worker()
        distributed.Queue(running.name).put((ctx.attempt, os.getpid(), worker.address))
        if ctx.attempt == 1:
            distributed.Event(unique("never")).wait(30)  # killed meanwhile
        return worker.address

    registry.register("fragile", fragile)
    spec = workflow("dies", {"id": "f", "action": "fragile", "try_count": 2}, retry_strategy="Immediate")
    try:
        async with executor_with(registry, spec, backend=backend) as executor:
            handle = executor.start("dies")
            attempt, pid, first_worker = await receive(running)
            assert attempt == 1
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(20):
                report = await handle
        outcome = report.outcomes["f"]
        assert report.success, report.error
        assert outcome.attempts == 2
        assert outcome.retry_messages[0].startswith("Attempt 1 failed: KilledWorker")
        assert report.cache.get("f", "result") == outcome.worker != first_worker
        assert (await receive(running))[0] == 2
    finally:
        await anyio.to_thread.run_sync(lambda: dask_client.wait_for_workers(2, timeout=30))


# -- large data stays on the cluster -------------------------------------------------------------------------

async def test_futures_and_collections_in_inputs_reach_actions_as_data(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    frame = pd.DataFrame({"x": range(1000)})
    registry.register("scatter", lambda: dask_client.scatter(frame), inline=True)  # a future: data on the cluster
    registry.register("lazy", lambda: dask.delayed(sum)([1, 2, 3]), inline=True)  # a collection: computed there
    registry.register("total", lambda frame, extra: (type(frame).__name__, int(frame["x"].sum()) + extra))
    spec = workflow(
        "big",
        {"id": "scatter", "action": "scatter", "outputs": [{"name": "frame"}]},
        {"id": "lazy", "action": "lazy", "outputs": [{"name": "value"}]},
        {"id": "total", "action": "total", "inputs": [
            {"name": "frame", "reference": "scatter.frame"}, {"name": "extra", "reference": "lazy.value"}]},
    )
    report = await executor_with(registry, spec, backend=backend).run("big")
    assert report.success, report.error
    assert isinstance(report.cache.get("scatter", "frame"), distributed.Future)
    assert report.cache.get("total", "result") == ("DataFrame", 499500 + 6)


async def test_a_result_that_contains_itself_comes_back(registry: ActionRegistry, backend: DaskBackend) -> None:
    def self_containing() -> dict:
        value: dict = {}
        value["self"] = value
        return value

    registry.register("loop", self_containing)
    with anyio.fail_after(30):  # the worker used to walk it forever, looking for futures
        report = await executor_with(registry, workflow("loop", {"id": "loop", "action": "loop"}),
                                     backend=backend).run("loop")
    assert report.success, report.error
    value = report.cache.get("loop", "self")  # a mapping's keys are the node's outputs
    assert value["self"] is value


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_action_on_a_worker_can_leave_its_output_on_the_cluster(
    registry: ActionRegistry, backend: DaskBackend, kind: str
) -> None:
    def load() -> Any:
        return distributed.get_client().scatter(pd.DataFrame({"x": range(10)}))

    async def load_async() -> Any:
        return await distributed.get_client().scatter(pd.DataFrame({"x": range(10)}))

    registry.register("load", load if kind == "sync" else load_async)
    registry.register("count", lambda frame: len(frame))
    spec = workflow(
        "remote",
        {"id": "load", "action": "load", "outputs": [{"name": "frame"}]},
        {"id": "count", "action": "count", "inputs": [{"name": "frame", "reference": "load.frame"}]},
    )
    report = await executor_with(registry, spec, backend=backend).run("remote")
    assert report.success, report.error
    assert isinstance(report.cache.get("load", "frame"), distributed.Future)
    assert report.cache.get("count", "result") == 10


# -- how results come back ------------------------------------------------------------------------------

def transfers_out(client: Any) -> int:
    """How many times the workers have sent data to anyone (the notebook's gathers included)."""
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_count_total).values())


async def test_small_results_come_back_without_a_request_to_the_workers(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    async def later(i: int) -> dict[str, int]:
        return {"square": i * i}

    registry.register("square", lambda i: {"square": i * i})
    registry.register("later", later)
    # independent nodes: no data moves between workers, so any transfer would be a gather
    nodes = [{"id": f"{action}{i}", "action": action, "inputs": [{"name": "i", "value": i}]}
             for i in range(6) for action in ("square", "later")]
    before = transfers_out(dask_client)
    report = await executor_with(registry, workflow("small", *nodes), backend=backend).run("small")
    assert report.success, report.error
    assert [report.cache.get(f"{action}{i}", "square") for i in range(6) for action in ("square", "later")] == [
        i * i for i in range(6) for _ in range(2)
    ]
    assert transfers_out(dask_client) == before  # each came pushed, through the scheduler


async def test_a_big_result_is_fetched_from_its_worker_when_read_not_pushed(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    from dagger_nb.backends.dask import PUSH_LIMIT

    registry.register("blob", lambda size: b"x" * size)
    spec = workflow(
        "sizes",
        {"id": "small", "action": "blob", "inputs": [{"name": "size", "value": 10}]},
        {"id": "big", "action": "blob", "inputs": [{"name": "size", "value": 4 * PUSH_LIMIT}]},
    )
    before = transfers_out(dask_client)
    report = await executor_with(registry, spec, backend=backend).run("sizes")
    assert transfers_out(dask_client) == before  # the big one stays on its worker until read
    assert report.cache.get("big", "result") == b"x" * 4 * PUSH_LIMIT
    assert report.cache.get("small", "result") == b"x" * 10
    assert transfers_out(dask_client) == before + 1
    # what the scheduler keeps of the pushes (its last 1000 events per topic) stays small: the big
    # result's push says where it ran and that it stayed there
    events = [message for _, message in dask_client.get_events(backend._gatherer.topic)]
    assert all(len(payload) <= PUSH_LIMIT for _, _, payload in events)
    assert len([name for name, _, _ in events if name == backend._gatherer.push_to[1]]) == 2


async def test_a_pushed_result_nobody_kept_is_fetched(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagger_nb.backends.dask import gathering as dask_backend

    monkeypatch.setattr(dask_backend, "_PUSHED_LIMIT", 0)  # every push dropped as it comes
    registry.register("square", lambda i: i * i)
    nodes = [{"id": f"n{i}", "action": "square", "inputs": [{"name": "i", "value": i}]} for i in range(4)]
    before = transfers_out(dask_client)
    report = await executor_with(registry, workflow("dropped", *nodes), backend=backend).run("dropped")
    assert [report.cache.get(f"n{i}", "result") for i in range(4)] == [0, 1, 4, 9]
    assert transfers_out(dask_client) > before  # fetched (in batches: one request may bring several)


def test_a_task_that_dask_fails_after_its_push_fails(backend: DaskBackend, dask_client: Any) -> None:
    # The window (a worker dying between the push and its report) is too short to hit for real:
    # a pushed result arrives for a task Dask reports as failed.
    from dagger_nb.backends.dask import worker as dask_backend

    future = dask_client.submit(divmod, 1, 0, pure=False)
    distributed.wait(future)
    done = dask_backend._Done({"result": 1}, None, [])
    backend._gatherer.pushed(future.key, dask_backend.dask_pickle.dumps(done))
    with pytest.raises(ZeroDivisionError):
        dask_client.sync(backend._gatherer.result, future)


async def test_backends_sharing_a_client_each_get_their_own_results(
    registry: ActionRegistry, dask_client: Any
) -> None:
    registry.register("tag", lambda text, i: f"{text}{i}")
    reports: dict[str, Any] = {}

    async def run(text: str) -> None:
        inputs = [{"name": "text", "value": text}]
        nodes = [{"id": f"n{i}", "action": "tag", "inputs": [*inputs, {"name": "i", "value": i}]} for i in range(6)]
        executor = executor_with(registry, workflow(text, *nodes), backend=DaskBackend(dask_client))
        reports[text] = await executor.run(text)

    before = transfers_out(dask_client)
    async with anyio.create_task_group() as group:
        for text in ("a", "b"):
            group.start_soon(run, text)
    for text, report in reports.items():
        assert [report.cache.get(f"n{i}", "result") for i in range(6)] == [f"{text}{i}" for i in range(6)]
    assert transfers_out(dask_client) == before  # both backends' results came pushed, on the client's one topic


def test_the_gatherer_keeps_a_bounded_number_of_pushed_results(dask_client: Any) -> None:
    from dagger_nb.backends.dask import gathering as dask_backend

    gatherer = dask_backend._Gatherer(dask_client)
    for i in range(dask_backend._PUSHED_LIMIT + 10):  # pushed for calls nobody receives (say, discarded)
        gatherer.pushed(f"key-{i}", b"payload")
    assert len(gatherer._pushed) == dask_backend._PUSHED_LIMIT
    assert "key-0" not in gatherer._pushed and f"key-{dask_backend._PUSHED_LIMIT + 9}" in gatherer._pushed


# -- the building block for other callers (task agents) ----------------------------------------------------

async def test_invoke_runs_a_positional_function_on_the_cluster_and_records_the_worker(
    backend: DaskBackend, dask_client: Any
) -> None:
    class Where:
        worker: str | None = None

    async def agent(payload: dict[str, Any], note: str) -> dict[str, Any]:
        return {"echo": payload["text"] + note, "pid": os.getpid()}

    where = Where()
    output = await backend.invoke(Callee.of("echo_agent", agent), args=({"text": "hi"}, "!"), outcome=where)
    assert output["echo"] == "hi!" and output["pid"] != os.getpid()
    assert where.worker in workers(dask_client)
    with pytest.raises(ZeroDivisionError):
        await backend.invoke(Callee.of("divide", divmod), args=(1, 0), outcome=where)


async def test_the_old_call_still_works_and_says_it_is_deprecated(backend: DaskBackend) -> None:
    with pytest.warns(DeprecationWarning, match="DaskBackend.call"):
        assert await backend.call("divide", divmod, 7, 2) == (3, 1)


def test_the_backends_are_backends(backend: DaskBackend) -> None:
    assert isinstance(backend, Backend) and isinstance(LocalBackend(), Backend)
    assert not isinstance(object(), Backend)


@pytest.mark.parametrize("wrong", ["client", "object"])
def test_an_executor_or_a_manager_refuses_what_is_not_a_backend(dask_client: Any, wrong: str) -> None:
    given = dask_client if wrong == "client" else object()
    with pytest.raises(dagger_nb.ExecutionError, match="backend must be a Backend such as DaskBackend"):
        dagger_nb.DagExecutor(ActionRegistry(), backend=given)
    with pytest.raises(dagger_nb.TaskError, match="backend must be a Backend such as DaskBackend"):
        dagger_nb.TaskManager(backend=given)
