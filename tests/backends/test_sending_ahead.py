"""Nodes sent to the Dask cluster before their dependencies finish (dagger_nb/dag/ahead.py).

Whatever goes ahead, the run must behave as if every node were sent when its
turn came: same results, same retries and errors, same limit on nodes in
flight, and no call left behind on the cluster or held by the notebook.
Actions run in other processes, so they report through the cluster
(``distributed.Queue``/``Event``) or through files under ``tmp_path``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import dagger_nb
from dagger_nb import ActionRegistry
from dagger_nb.backends.dask import DaskBackend
from dagger_nb.backends.dask import batching as dask_backend
from dagger_nb.errors import NotSentAhead
from tests.backends.test_dask_backend import held_keys, receive, scheduler_keys, unique
from tests.dag.helpers import executor_with, workflow

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

pytestmark = pytest.mark.anyio


@pytest.fixture
def sends(backend: DaskBackend, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    """Every ``send`` of the backend: the action, and the nodes whose calls it waits for."""
    calls: list[tuple[str, tuple[str, ...]]] = []
    send = backend.send

    def recorded(action: Any, kwargs: dict[str, Any], **options: Any) -> Any:
        calls.append((action.name, tuple(options.get("after") or ())))
        return send(action, kwargs, **options)

    monkeypatch.setattr(backend, "send", recorded)
    return calls


class Gate:
    """Holds an action on its worker: it reports that it started, then waits until the test opens the gate."""

    def __init__(self, client: Any) -> None:
        self._started = distributed.Queue(unique("started"), client=client)
        self._open = distributed.Event(unique("open"), client=client)

    def action(self, value: int) -> Any:
        """A sync action that reports ``value``, waits for the gate and returns ``value``."""
        started, gate = self._started.name, self._open.name

        def held() -> int:
            distributed.Queue(started).put(value)
            distributed.Event(gate).wait(10)  # a thread cannot be killed: a cancelled one runs to its end
            return value

        return held

    async def started(self) -> Any:
        """The value the next held action reported when it started."""
        return await receive(self._started)

    def open(self) -> None:
        """Let every held action finish."""
        self._open.set()


@pytest.fixture
def gate(dask_client: Any) -> Gate:
    return Gate(dask_client)


def chain(name: str, *actions: str, **config: Any) -> Any:
    """A workflow running ``actions`` one after the other, each taking the previous one's result."""
    nodes = [{"id": "n0", "action": actions[0]}]
    nodes += [
        {"id": f"n{i}", "action": action, "inputs": [{"name": "x", "reference": f"n{i - 1}.result"}]}
        for i, action in enumerate(actions[1:], start=1)
    ]
    return workflow(name, *nodes, **config)


async def test_a_chain_is_on_the_cluster_before_its_first_node_finishes(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, sends: list[Any], gate: Gate
) -> None:
    registry.register("first", gate.action(1))
    registry.register("add_one", lambda x: x + 1)
    registry.register("double", lambda x: 2 * x)
    spec = chain("ahead", "first", "add_one", "double")
    async with executor_with(registry, spec, backend=backend) as executor:
        handle = executor.start("ahead")
        assert await gate.started() == 1
        # n0 is still running: the rest of the chain was submitted already, each waiting for the one before
        assert sends == [("first", ()), ("add_one", ("n0",)), ("double", ("n1",))]
        gate.open()
        with anyio.fail_after(10):
            report = await handle
    assert report.success, report.error
    assert [report.cache.get(f"n{i}", "result") for i in range(3)] == [1, 2, 4]
    assert all(report.outcomes[f"n{i}"].worker is not None for i in range(3))
    assert not held_keys(dask_client, "add_one-") and not held_keys(dask_client, "double-")


async def test_a_node_sent_ahead_of_a_retried_dependency_runs_again_on_the_new_result(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, sends: list[Any], tmp_path: Path
) -> None:
    marker = tmp_path / "failed-once"

    def flaky() -> int:
        if not marker.exists():
            marker.touch()
            raise RuntimeError("first attempt fails")
        return 20

    registry.register("flaky", flaky)
    registry.register("add_one", lambda x: x + 1)
    spec = workflow(
        "retried",
        {"id": "a", "action": "flaky", "try_count": 2},
        {"id": "b", "action": "add_one", "inputs": [{"name": "x", "reference": "a.result"}]},
        retry_strategy="Immediate",
    )
    report = await executor_with(registry, spec, backend=backend).run("retried")
    assert report.success, report.error
    assert report.outcomes["a"].attempts == 2
    assert report.outcomes["b"].attempts == 1 and report.cache.get("b", "result") == 21
    # b went ahead of a's first call, whose failure made that call useless: b was sent again
    assert sends[:2] == [("flaky", ()), ("add_one", ("a",))]
    assert sends[2:] == [("flaky", ()), ("add_one", ())]
    assert not held_keys(dask_client, "add_one-")


async def test_nodes_sent_ahead_count_against_max_parallel_nodes(
    registry: ActionRegistry, backend: DaskBackend, sends: list[Any], gate: Gate
) -> None:
    registry.register("root", gate.action(1))
    registry.register("add_one", lambda x: x + 1)
    leaves = [
        {"id": f"leaf{i}", "action": "add_one", "inputs": [{"name": "x", "reference": "root.result"}]}
        for i in range(4)
    ]
    spec = workflow("limited", {"id": "root", "action": "root"}, *leaves, max_parallel_nodes=2)
    async with executor_with(registry, spec, backend=backend) as executor:
        handle = executor.start("limited")
        await gate.started()
        # the root and one leaf fill the two places: the other leaves wait in the notebook
        assert sends == [("root", ()), ("add_one", ("root",))]
        gate.open()
        with anyio.fail_after(10):
            report = await handle
    assert report.success, report.error
    assert [report.cache.get(f"leaf{i}", "result") for i in range(4)] == [2, 2, 2, 2]
    assert len(sends) == 5  # once each


async def test_a_result_left_on_the_cluster_makes_the_node_sent_ahead_run_anew(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, sends: list[Any]
) -> None:
    def load() -> Any:
        return distributed.get_client().scatter(list(range(10)))

    registry.register("load", load)
    registry.register("count", lambda x: len(x))
    report = await executor_with(registry, chain("left", "load", "count"), backend=backend).run("left")
    assert report.success, report.error
    assert report.cache.get("n1", "result") == 10
    # sent ahead, it could not take a future from n0's result on the worker; the notebook handed it on
    assert sends == [("load", ()), ("count", ("n0",)), ("count", ())]
    assert report.outcomes["n1"].attempts == 1


async def test_a_collection_in_a_result_reaches_the_node_sent_ahead_computed(
    registry: ActionRegistry, backend: DaskBackend, sends: list[Any]
) -> None:
    registry.register("plan", lambda: dask.delayed(sum)([1, 2, 3]))  # lazy, returned by a worker
    registry.register("use", lambda x: (type(x).__name__, x))
    report = await executor_with(registry, chain("lazy", "plan", "use"), backend=backend).run("lazy")
    assert report.success, report.error
    assert report.cache.get("n1", "result") == ("int", 6)  # as when the node waits for its turn
    assert sends == [("plan", ()), ("use", ("n0",)), ("use", ())]


async def test_cancelling_a_run_cancels_the_calls_sent_ahead(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, sends: list[Any], gate: Gate
) -> None:
    registry.register("stuck", gate.action(1))
    registry.register("after_stuck", lambda x: x + 1)
    spec = chain("cancelled", "stuck", "after_stuck", "after_stuck")
    async with executor_with(registry, spec, backend=backend) as executor:
        handle = executor.start("cancelled")
        await gate.started()
        assert [name for name, _ in sends] == ["stuck", "after_stuck", "after_stuck"]
        handle.cancel()
        with anyio.fail_after(5):
            report = await handle
    assert report.status == "cancelled"
    assert [report.outcomes[f"n{i}"].status for i in range(3)] == ["cancelled", "pending", "pending"]
    assert not [key for key in scheduler_keys(dask_client) if key.startswith(("stuck-", "after_stuck-"))]
    assert not held_keys(dask_client, "after_stuck-")
    gate.open()


async def test_calls_sent_ahead_of_a_failed_node_are_cancelled_and_the_nodes_skipped(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, sends: list[Any]
) -> None:
    def broken() -> int:
        raise ValueError("no data")

    registry.register("broken", broken)
    registry.register("downstream", lambda x: x + 1)
    spec = chain(
        "failing", "broken", "downstream", "downstream",
        on_failure="continue", max_attempts=2, retry_strategy="Immediate",
    )
    report = await executor_with(registry, spec, backend=backend).run("failing")
    assert report.outcomes["n0"].error == "Failed after 2 attempts. Last error: ValueError: no data"
    assert [report.outcomes[f"n{i}"].status for i in (1, 2)] == ["skipped", "skipped"]
    # sent ahead of the first attempt; never again (the retry makes a new call they did not wait for)
    assert [name for name, _ in sends] == ["broken", "downstream", "downstream", "broken"]
    assert not [key for key in scheduler_keys(dask_client) if key.startswith("downstream-")]
    assert not held_keys(dask_client, "downstream-")


async def test_nodes_with_a_timeout_or_taking_ctx_wait_for_their_turn(
    registry: ActionRegistry, backend: DaskBackend, sends: list[Any]
) -> None:
    def with_ctx(x: int, ctx: dagger_nb.NodeContext) -> int:
        return x + ctx.attempt

    registry.register("one", lambda: 1)
    registry.register("add_one", lambda x: x + 1)
    registry.register("with_ctx", with_ctx)
    spec = workflow(
        "turns",
        {"id": "a", "action": "one"},
        {"id": "b", "action": "add_one", "timeout": 30, "inputs": [{"name": "x", "reference": "a.result"}]},
        {"id": "c", "action": "add_one", "inputs": [{"name": "x", "reference": "b.result"}]},
        {"id": "d", "action": "with_ctx", "inputs": [{"name": "x", "reference": "c.result"}]},
    )
    report = await executor_with(registry, spec, backend=backend).run("turns")
    assert report.success, report.error
    assert report.cache.get("d", "result") == 4
    # b (timeout: its clock starts on its turn) is sent on its turn; c goes ahead of b; d (ctx) is invoked
    assert sends == [("one", ()), ("add_one", ()), ("add_one", ("b",))]


def fan_out_and_in(name: str, width: int, **config: Any) -> Any:
    """root -> ``width`` leaves adding one to its result -> a sink totalling them."""
    leaves = [
        {"id": f"leaf{i}", "action": "add_one", "inputs": [{"name": "x", "reference": "root.result"}]}
        for i in range(width)
    ]
    sink = {"id": "sink", "action": "total",
            "inputs": [{"name": f"p{i}", "reference": f"leaf{i}.result"} for i in range(width)]}
    return workflow(name, {"id": "root", "action": "one"}, *leaves, sink, **config)


def root_with_leaves(name: str, ys: dict[str, dict[str, Any]], *more: dict[str, Any], action: str = "add",
                     **config: Any) -> Any:
    """root (action ``one``) -> a leaf per entry of ``ys`` taking root's result as ``x`` and the entry
    (an input's ``reference`` or ``value``) as ``y``, sent in one step; then ``more`` nodes."""
    leaves = [
        {"id": leaf, "action": action, "inputs": [{"name": "x", "reference": "root.result"}, {"name": "y", **y}]}
        for leaf, y in ys.items()
    ]
    return workflow(name, {"id": "root", "action": "one"}, *leaves, *more, on_failure="continue", **config)


def root_with_a_bad_and_a_good_leaf(name: str, **config: Any) -> Any:
    """root -> bad (adding the run input ``bad``) and good (adding the run input ``two``)."""
    return root_with_leaves(name, {"bad": {"reference": "inputs.bad"}, "good": {"reference": "inputs.two"}}, **config)


@pytest.fixture
def graph_updates(dask_client: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The keys of every graph the client sends the scheduler, one list per update."""
    updates: list[list[str]] = []
    submit, get = dask_client.submit, dask_client.get

    def one(fn: Any, *args: Any, key: str, **options: Any) -> Any:
        updates.append([key])
        return submit(fn, *args, key=key, **options)

    def graph(dsk: Any, keys: list[str], **options: Any) -> Any:
        updates.append(list(keys))
        return get(dsk, keys, **options)

    monkeypatch.setattr(dask_client, "submit", one)
    monkeypatch.setattr(dask_client, "get", graph)
    return updates


@pytest.mark.parametrize("private_modules", [True, False], ids=["one-graph", "dask-without-private-modules"])
async def test_the_nodes_sent_in_one_step_reach_the_scheduler_as_one_graph(
    registry: ActionRegistry,
    backend: DaskBackend,
    dask_client: Any,
    sends: list[Any],
    graph_updates: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
    private_modules: bool,
) -> None:
    if not private_modules:  # an older Dask: the same run, one client.submit per call
        monkeypatch.setattr(dask_backend, "LLGExpr", None)
    registry.register("one", lambda: 1)
    registry.register("add_one", lambda x: x + 1)
    registry.register("total", lambda **parts: sum(parts.values()))
    report = await executor_with(registry, fan_out_and_in("wide", 5), backend=backend).run("wide")
    assert report.success, report.error
    assert report.cache.get("sink", "result") == 10
    assert len(sends) == 7
    # the root, its five leaves and the sink waiting for them: one graph update, the usual keys
    assert [len(keys) for keys in graph_updates] == ([7] if private_modules else [1] * 7)
    assert sorted(key.split("-")[0] for keys in graph_updates for key in keys) == ["add_one"] * 5 + ["one", "total"]
    assert all(report.outcomes[node].worker is not None for node in report.outcomes)
    assert not [key for prefix in ("one-", "add_one-", "total-") for key in held_keys(dask_client, prefix)]


async def test_a_node_sent_ahead_whose_input_does_not_pickle_fails_alone(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, sends: list[Any]
) -> None:
    registry.register("one", lambda: 1)
    registry.register("add", lambda x, y: x + y)
    spec = root_with_a_bad_and_a_good_leaf("unpicklable", max_attempts=2, retry_strategy="Immediate")
    executor = executor_with(registry, spec, backend=backend)
    with anyio.fail_after(30):
        report = await executor.run("unpicklable", inputs={"bad": threading.Lock(), "two": 2})
    assert [report.outcomes[node].status for node in ("root", "bad", "good")] == ["succeeded", "failed", "succeeded"]
    assert report.cache.get("good", "result") == 3
    assert report.outcomes["bad"].attempts == 2
    assert "Could not serialize" in (report.outcomes["bad"].error or "")
    assert [name for name, _ in sends][:3] == ["one", "add", "add"]  # all three went in one step
    assert not held_keys(dask_client, "one-") and not held_keys(dask_client, "add-")


def _fail_to_load() -> Any:
    raise ValueError("this input cannot be loaded on the scheduler")


class LoadsNowhere:
    """Pickles fine in the notebook, fails to unpickle anywhere else (a scheduler without its module)."""

    def __reduce__(self) -> Any:
        return (_fail_to_load, ())


async def test_a_graph_the_scheduler_rejects_fails_only_the_node_whose_input_caused_it(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, graph_updates: list[list[str]]
) -> None:
    registry.register("one", lambda: 1)
    registry.register("add", lambda x, y: x + y)
    spec = root_with_a_bad_and_a_good_leaf("rejected", max_attempts=1)
    executor = executor_with(registry, spec, backend=backend)
    with anyio.fail_after(30):
        report = await executor.run("rejected", inputs={"bad": LoadsNowhere(), "two": 2})
    assert len(graph_updates[0]) == 3  # the three went together, and the scheduler failed all three
    assert [report.outcomes[node].status for node in ("root", "bad", "good")] == ["succeeded", "failed", "succeeded"]
    assert [report.outcomes[node].attempts for node in ("root", "bad", "good")] == [1, 1, 1]
    assert report.cache.get("good", "result") == 3
    assert "deserialization of the task graph" in (report.outcomes["bad"].error or "")
    assert not held_keys(dask_client, "one-") and not held_keys(dask_client, "add-")


async def test_a_call_waiting_for_one_that_could_not_be_submitted_misses_too(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    registry.register("one", lambda: 1)
    registry.register("add", lambda x, y: x + y)
    one, add = registry.get("one"), registry.get("add")
    await backend.prepare()
    picks = (("x", "bad", (), "result"),)
    with backend.batch() as batch:
        root = backend.send(one, {}, batch=batch)
        bad = backend.send(add, {"y": threading.Lock()}, after={"root": root}, picks=(("x", "root", (), "result"),),
                           batch=batch)
        in_same_batch = backend.send(add, {"y": 1}, after={"bad": bad}, picks=picks, batch=batch)
    with backend.batch() as batch:  # a later step, as when the run had no room before
        in_later_batch = backend.send(add, {"y": 2}, after={"bad": bad}, picks=picks, batch=batch)
    assert await backend.receive(root) == 1
    for call in (bad, in_same_batch, in_later_batch):
        with pytest.raises(NotSentAhead):  # each is sent anew, alone, when its turn comes
            await backend.receive(call)
    assert not held_keys(dask_client, "one-") and not held_keys(dask_client, "add-")


async def test_a_graph_cancelled_for_one_lost_input_fails_only_the_node_that_took_it(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any, graph_updates: list[list[str]]
) -> None:
    registry.register("one", lambda: 1)
    registry.register("add", lambda x, y: x + y)
    gone = dask_client.submit(int, 5, key=unique("gone"), pure=False)
    dask_client.cancel([gone])  # the future is still here, its key no longer on the scheduler
    graph_updates.clear()
    spec = root_with_a_bad_and_a_good_leaf("lost", max_attempts=1)
    executor = executor_with(registry, spec, backend=backend)
    with anyio.fail_after(30):
        report = await executor.run("lost", inputs={"bad": gone, "two": 2})
    assert len(graph_updates[0]) == 3
    assert [report.outcomes[node].status for node in ("root", "bad", "good")] == ["succeeded", "failed", "succeeded"]
    assert report.cache.get("good", "result") == 3
    assert "lost dependencies" in (report.outcomes["bad"].error or "")
    gone.release()
    # no future of the cancelled graph is left (the client would announce it again on every get_dataset)
    assert not [key for prefix in ("one-", "add-", "gone-") for key in held_keys(dask_client, prefix)]
