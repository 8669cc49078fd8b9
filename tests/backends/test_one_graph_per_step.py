"""The calls of one scheduling step go to the scheduler as one graph (DaskBackend.batch, Ahead.batched).

Whatever goes wrong with one call of a step (an input that does not pickle or
compute, a graph the scheduler rejects) must fail that call's node only, leave
no key behind, and never end the run; and the batches must hold up with an
asynchronous client and with several loops sharing one backend.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import anyio
import pytest

from dagger_nb import ActionRegistry, ExecutionReport
from dagger_nb.backends.dask import DaskBackend
from tests.backends.test_dask_backend import held_keys
from tests.backends.test_sending_ahead import (  # noqa: F401 - graph_updates is a fixture
    LoadsNowhere,
    fan_out_and_in,
    graph_updates,
    root_with_leaves,
)
from tests.dag.helpers import executor_with, workflow

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
pytestmark = pytest.mark.anyio


def _arith(registry: ActionRegistry) -> None:
    registry.register("one", lambda: 1)
    registry.register("add_one", lambda x: x + 1)
    registry.register("total", lambda **parts: sum(parts.values()))


async def run_within(seconds: float, registry: ActionRegistry, spec: Any, backend: DaskBackend,
                     **inputs: Any) -> ExecutionReport:
    """Run ``spec`` on ``backend`` with ``inputs``, failing the test if that takes over ``seconds``."""
    with anyio.fail_after(seconds):
        return await executor_with(registry, spec, backend=backend).run(spec.name, inputs=inputs)


def attempts(report: ExecutionReport) -> dict[str, tuple[str, int]]:
    """Each node's ``(status, attempts)``."""
    return {node: (outcome.status, outcome.attempts) for node, outcome in report.outcomes.items()}


# -- asynchronous client -----------------------------------------------------------------------------


async def test_async_client_fan_out_goes_as_one_graph(registry: ActionRegistry, dask_cluster: Any) -> None:
    _arith(registry)
    async with distributed.Client(dask_cluster.scheduler_address, asynchronous=True) as client:
        backend = DaskBackend(client)
        with anyio.fail_after(30):
            report = await executor_with(registry, fan_out_and_in("wide", 8), backend=backend).run("wide")
        assert report.success, report.error
        assert report.cache.get("sink", "result") == 16
        keys = [str(key) for key in client.refcount]
    assert not [key for key in keys if key.split("-")[0] in ("one", "add_one", "total")]


# -- a run at its max_parallel_nodes limit ------------------------------------------------------------


async def test_at_the_limit_the_nodes_released_in_one_step_go_together(
    registry: ActionRegistry, backend: DaskBackend, graph_updates: list[list[str]]  # noqa: F811
) -> None:
    _arith(registry)
    spec = fan_out_and_in("limited", 20)  # the default max_parallel_nodes (8)
    report = await executor_with(registry, spec, backend=backend).run("limited")
    assert report.success, report.error
    assert report.cache.get("sink", "result") == 40
    sizes = [len(keys) for keys in graph_updates]
    # the root and 7 leaves; then the leaves the root's success releases free room for more, in one update
    assert sizes[0] == 8 and sizes.count(1) <= 2, sizes


# -- an exception raised inside a batch block -----------------------------------------------------------


def _lock_holder() -> Any:
    return dask.delayed(lambda lock: 1)(threading.Lock())  # pickles nowhere: client.compute raises at send


async def test_an_uncomputable_collection_input_of_a_node_sent_ahead_fails_only_that_node(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, tmp_path: Any
) -> None:
    # root's call and bad's, sent ahead, are in one batch; computing bad's input fails as it is sent
    marker = str(tmp_path)

    def root() -> int:
        open(os.path.join(marker, f"root-{os.urandom(4).hex()}"), "w").close()
        return 1

    registry.register("root", root)
    registry.register("add", lambda x, y: x + 1)
    spec = workflow(
        "uncomputable",
        {"id": "root", "action": "root"},
        {"id": "bad", "action": "add",
         "inputs": [{"name": "x", "reference": "root.result"}, {"name": "y", "reference": "inputs.lazy"}]},
        {"id": "good", "action": "add",
         "inputs": [{"name": "x", "reference": "root.result"}, {"name": "y", "value": 2}]},
        on_failure="continue", max_attempts=2, retry_strategy="Immediate",
    )
    report = await run_within(30, registry, spec, backend, lazy=_lock_holder())
    assert attempts(report) == {"root": ("succeeded", 1), "bad": ("failed", 2), "good": ("succeeded", 1)}
    assert "Could not serialize" in (report.outcomes["bad"].error or "")
    assert len(os.listdir(marker)) == 1  # root ran once


# -- many steps, each sending ahead of calls not yet finished -----------------------------------------------


async def test_hundreds_of_joins_sent_ahead_all_get_their_inputs(
    registry: ActionRegistry, backend: DaskBackend
) -> None:
    # each b waits for an a sent ahead and a c taking ctx (run on its turn): many steps, many batches
    registry.register("one", lambda: {"v": 1})
    registry.register("side", lambda ctx: 0)
    registry.register("add", lambda v, w: v + w)
    nodes: list[dict] = []
    for i in range(150):
        nodes.append({"id": f"a{i}", "action": "one"})
        nodes.append({"id": f"c{i}", "action": "side"})
        nodes.append({"id": f"b{i}", "action": "add", "inputs": [
            {"name": "v", "reference": f"a{i}.v"}, {"name": "w", "reference": f"c{i}.result"}]})
    spec = workflow("late", *nodes, on_failure="continue", max_attempts=1)
    report = await run_within(120, registry, spec, backend)
    failed = {k: o.error for k, o in report.outcomes.items() if o.status != "succeeded"}
    assert not failed, list(failed.items())[:3]


async def test_an_uncomputable_input_of_a_node_sent_ahead_when_another_succeeds_fails_only_that_node(
    registry: ActionRegistry, backend: DaskBackend
) -> None:
    # a (ctx: run on its turn) succeeds while b runs: d goes ahead then, and computing its input fails
    import time

    registry.register("a", lambda ctx: 1)
    registry.register("b", lambda: time.sleep(1) or 2)
    registry.register("d", lambda x, y, z: x + y)
    spec = workflow(
        "crash",
        {"id": "a", "action": "a"},
        {"id": "b", "action": "b"},
        {"id": "d", "action": "d", "inputs": [
            {"name": "x", "reference": "a.result"}, {"name": "y", "reference": "b.result"},
            {"name": "z", "reference": "inputs.lazy"}]},
        on_failure="continue", max_attempts=1,
    )
    report = await run_within(30, registry, spec, backend, lazy=_lock_holder())
    assert report.outcomes["d"].status == "failed"


async def test_a_kept_error_of_a_failed_send_holds_no_future(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    import gc

    registry.register("one", lambda: 1)
    registry.register("add", lambda x, y: x + 1)
    await backend.prepare()
    root = backend.send(registry.get("one"), {})
    key = root.future.key
    kept = None
    try:
        backend.send(registry.get("add"), {"y": threading.Lock()}, after={"root": root},
                     picks=(("x", "root", (), "result"),))
    except Exception as error:  # kept, as a log handler or a notebook's last error would
        kept = error
    assert await backend.receive(root) == 1
    gc.collect()
    assert kept is not None
    assert str(key) not in held_keys(dask_client, "one-"), "the kept error holds the upstream's future"


async def test_rejected_graph_whose_culprit_is_the_node_sent_on_its_turn(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    registry.register("src", lambda odd: 1)
    registry.register("add_one", lambda x: x + 1)
    spec = workflow(
        "root-culprit",
        {"id": "root", "action": "src", "inputs": [{"name": "odd", "reference": "inputs.odd"}]},
        *[{"id": f"c{i}", "action": "add_one", "inputs": [{"name": "x", "reference": "root.result"}]}
          for i in range(4)],
        on_failure="continue", max_attempts=2, retry_strategy="Immediate",
    )
    report = await run_within(30, registry, spec, backend, odd=LoadsNowhere())
    root = report.outcomes["root"]
    assert (root.status, root.attempts) == ("failed", 2), (root.status, root.attempts, root.error)
    assert "deserialization of the task graph" in (root.error or "")
    assert all(report.outcomes[f"c{i}"].status == "skipped" for i in range(4))
    assert not held_keys(dask_client, "src-") and not held_keys(dask_client, "add_one-")


async def test_both_kinds_of_bad_input_in_one_step(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    registry.register("one", lambda: 1)
    registry.register("add", lambda x, y: x + 1)
    spec = root_with_leaves(
        "both",
        {"lock": {"reference": "inputs.lock"}, "odd": {"reference": "inputs.odd"}, "good": {"value": 1}},
        {"id": "sink", "action": "add",
         "inputs": [{"name": "x", "reference": "good.result"}, {"name": "y", "value": 1}]},
        max_attempts=1,
    )
    report = await run_within(30, registry, spec, backend, lock=threading.Lock(), odd=LoadsNowhere())
    got = attempts(report)
    assert got == {"root": ("succeeded", 1), "lock": ("failed", 1), "odd": ("failed", 1),
                   "good": ("succeeded", 1), "sink": ("succeeded", 1)}, got
    assert not held_keys(dask_client, "one-") and not held_keys(dask_client, "add-")


async def test_no_key_left_on_the_scheduler_after_rejected_and_missed_graphs(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    from tests.backends.test_dask_backend import scheduler_keys

    registry.register("one", lambda: 1)
    registry.register("addz", lambda x, y: x + 1)
    gone = dask_client.submit(int, 5, key=f"gone-{os.urandom(4).hex()}", pure=False)
    dask_client.cancel([gone])
    spec = root_with_leaves(
        "leftovers", {f"n{i}": {"reference": f"inputs.v{i}"} for i in range(4)}, action="addz",
        max_attempts=2, retry_strategy="Immediate",
    )
    inputs = {"v0": LoadsNowhere(), "v1": threading.Lock(), "v2": gone, "v3": 3}
    report = await run_within(30, registry, spec, backend, **inputs)
    got = attempts(report)
    assert got["n3"] == ("succeeded", 1) and got["root"] == ("succeeded", 1), got
    assert [got[f"n{i}"] for i in range(3)] == [("failed", 2)] * 3, got
    left = [k for k in scheduler_keys(dask_client) if k.startswith(("one-", "addz-"))]
    assert not left, left


def test_three_loops_in_three_threads_share_one_backend(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:

    _arith(registry)
    results: dict[int, Any] = {}

    def run(index: int) -> None:
        executor = executor_with(registry, fan_out_and_in(f"w{index}", 30, max_parallel_nodes=40), backend=backend)
        for _ in range(3):
            report = executor.run_sync(f"w{index}")
            results.setdefault(index, []).append((report.success, report.cache.get("sink", "result"), report.error))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r == [(True, 60, None)] * 3 for r in results.values()) and len(results) == 3, results
    assert not [k for p in ("one-", "add_one-", "total-") for k in held_keys(dask_client, p)]
