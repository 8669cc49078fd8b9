"""Big results stay on the cluster until read; the result pump is owned and closed with the backend."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest

from dagger_nb import ActionRegistry, NodeSucceeded
from dagger_nb._callables import Callee
from dagger_nb.backends.dask import PUSH_LIMIT, DaskBackend
from dagger_nb.backends.dask.remote import ClusterValue
from dagger_nb.cache import Cache, Deferred, RunCache
from dagger_nb.errors import ExecutionError, FetchFailed
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio

BIG = 4 * PUSH_LIMIT
USES_BIG = [{"name": "data", "reference": "big.result"}]
PUMP = "dagger-nb Dask result pump"


def blob(size: int) -> bytes:
    return b"x" * size


def size(data: bytes) -> int:
    return len(data)


def big_then(*dependents: dict[str, Any]) -> Any:
    return workflow("kept", {"id": "big", "action": "blob", "inputs": [{"name": "size", "value": BIG}]}, *dependents)


def pump_tasks(backend: DaskBackend) -> list[str]:
    """The tasks on the client's loop that run ``backend``'s result pump or the group owning it."""
    gatherer = backend._gatherer
    owners = (gatherer, gatherer._pumps)

    def owned(task: asyncio.Task[Any]) -> bool:
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is None:
            return False
        here = frame.f_locals
        return here.get("self") in owners or getattr(here.get("fn"), "__self__", None) is gatherer

    async def names() -> list[str]:
        return [task.get_name() for task in asyncio.all_tasks() if owned(task)]

    return asyncio.run_coroutine_threadsafe(names(), backend.client.loop.asyncio_loop).result()


async def test_a_big_result_stays_on_the_cluster_and_is_fetched_once_on_access(
    registry: ActionRegistry, backend: DaskBackend
) -> None:
    registry.register("blob", blob)
    report = await executor_with(registry, big_then(), backend=backend).run("kept")
    assert report.success, report.error
    kept = report.cache.peek("big", "result")
    assert isinstance(kept, ClusterValue) and not kept.fetched
    assert "on the cluster, fetched on access" in repr(kept)
    values: list[bytes] = []
    readers = [threading.Thread(target=lambda: values.append(report.cache.get("big", "result"))) for _ in range(4)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert values == [blob(BIG)] * 4
    assert report.cache.peek("big", "result") == blob(BIG)  # the value took the handle's place
    assert kept.fetched and kept.future_on(backend.client) is None  # the future is let go of


async def test_a_dependent_on_the_cluster_takes_the_kept_result_where_it_is(
    registry: ActionRegistry, backend: DaskBackend
) -> None:
    registry.register("blob", blob)
    registry.register("size", size)
    # a timeout keeps the dependent from going ahead: it is invoked with the cache's handle
    spec = big_then({"id": "size", "action": "size", "timeout": 30, "inputs": USES_BIG})
    report = await executor_with(registry, spec, backend=backend).run("kept")
    assert report.success, report.error
    assert report.cache.get("size", "result") == BIG
    kept = report.cache.peek("big", "result")
    assert isinstance(kept, ClusterValue) and not kept.fetched  # never brought to the notebook


async def test_an_inline_dependent_in_the_notebook_gets_the_value(
    registry: ActionRegistry, backend: DaskBackend
) -> None:
    registry.register("blob", blob)
    registry.register("size", size, inline=True)
    spec = big_then({"id": "size", "action": "size", "inputs": USES_BIG})
    report = await executor_with(registry, spec, backend=backend).run("kept")
    assert report.success, report.error
    assert report.cache.get("size", "result") == BIG


async def test_a_result_that_cannot_be_fetched_names_its_node_and_output(
    registry: ActionRegistry, backend: DaskBackend, dask_client: Any
) -> None:
    registry.register("blob", blob)
    report = await executor_with(registry, big_then(), backend=backend).run("kept")
    kept = report.cache.peek("big", "result")
    dask_client.cancel(kept.future_on(dask_client))
    with pytest.raises(FetchFailed, match="^output 'result' of node 'big' was kept on the cluster and could not be "
                                          "fetched: .*Cancelled") as caught:
        await anyio.to_thread.run_sync(report.cache.get, "big", "result")
    assert (caught.value.namespace, caught.value.key) == ("big", "result")


async def test_a_run_with_a_store_keeps_values_not_handles(
    registry: ActionRegistry, backend: DaskBackend, tmp_path: Any
) -> None:
    registry.register("blob", blob)
    executor = executor_with(registry, big_then(), backend=backend, db=tmp_path / "runs.db")
    report = await executor.run("kept")
    assert report.success, report.error
    assert report.cache.peek("big", "result") == blob(BIG)


async def test_hooks_read_the_values_themselves(registry: ActionRegistry, backend: DaskBackend) -> None:
    registry.register("blob", blob)
    executor = executor_with(registry, big_then(), backend=backend)
    seen: list[Any] = []
    executor.add_hook(lambda event, run: seen.append(event.outputs) if isinstance(event, NodeSucceeded) else None)
    report = await executor.run("kept")
    assert report.success, report.error
    assert seen == [{"result": blob(BIG)}]


async def test_closing_the_backend_ends_its_result_pump(registry: ActionRegistry, dask_client: Any) -> None:
    backend = DaskBackend(dask_client)
    assert await backend.invoke(Callee.of("blob", blob), {"size": 3}) == b"xxx"
    assert PUMP in pump_tasks(backend)  # owned by the backend's group until it closes
    await backend.aclose()
    assert pump_tasks(backend) == []
    with pytest.raises(ExecutionError, match="was closed: it runs no more calls"):
        await backend.invoke(Callee.of("blob", blob), {"size": 3})


async def test_closing_the_backend_fails_a_call_waiting_for_its_result(
    registry: ActionRegistry, dask_client: Any
) -> None:
    import distributed

    name = f"dagger-nb-test-{id(registry)}"

    async def slow() -> int:
        await distributed.Event(name).set()  # on the worker: the call is running
        await distributed.Event(f"{name}-end").wait()  # until cancelled, or the test ends
        return 1

    backend = DaskBackend(dask_client)
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await backend.invoke(Callee.of("slow", slow))
        except ExecutionError as error:
            outcome.append(error)

    running = distributed.Event(name, client=dask_client)
    async with anyio.create_task_group() as group:
        group.start_soon(call)
        assert await anyio.to_thread.run_sync(running.wait, 20)
        backend.close()  # synchronous: cancels the pump on the client's loop and waits for it
    assert pump_tasks(backend) == []
    assert [str(error) for error in outcome] == ["the Dask backend was closed: its results can no longer be received"]
    await anyio.to_thread.run_sync(distributed.Event(f"{name}-end", client=dask_client).set)


# -- the cache's side, whatever keeps the value ------------------------------------------------------------


class Counted(Deferred):
    """A value kept elsewhere that counts its fetches (or fails them)."""

    __slots__ = ("calls", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    def fetch(self) -> Any:
        self.calls += 1
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def test_every_read_of_the_cache_fetches_a_deferred_value_once_and_counting_does_not() -> None:
    cache = Cache()
    cache.insert("load", "rows", rows := Counted([1, 2]))
    cache.insert("load", "n", n := Counted(2))
    assert len(cache) == 2 and list(cache) == [("load", "rows"), ("load", "n")] and rows.calls == 0
    assert cache.peek("load", "rows") is rows
    assert cache.namespace("load") == {"rows": [1, 2], "n": 2}
    assert cache.get("load", "rows") == [1, 2] and cache.items() == [("load", "rows", [1, 2]), ("load", "n", 2)]
    assert (rows.calls, n.calls) == (1, 1)
    assert cache.peek("load", "rows") == [1, 2]


def test_a_run_cache_reads_deferred_values_of_its_shared_cache() -> None:
    shared = Cache()
    view = RunCache(shared, {"x": 1})
    view.insert("load", "rows", rows := Counted([3]))
    assert view.peek("load", "rows") is rows and view.peek("inputs", "x") == 1 and len(view) == 2
    assert view.get("load", "rows") == [3] and shared.peek("load", "rows") == [3] and rows.calls == 1


def test_a_failed_fetch_names_the_node_and_output_and_is_tried_again() -> None:
    cache = Cache()
    cache.insert("train", "model", failing := Counted(ConnectionError("worker gone")))
    expected = ("output 'model' of node 'train' was kept on the cluster and could not be fetched: "
                "ConnectionError: worker gone")
    for _ in range(2):
        with pytest.raises(FetchFailed, match=f"^{expected}$"):
            cache.get("train", "model")
    assert failing.calls == 2 and cache.peek("train", "model") is failing
