"""With ``db=``: what ``publish`` acknowledges is in the file, a failed write is an error, memory stays bounded."""

from __future__ import annotations

import gc
import sqlite3
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

import dagger_nb
from dagger_nb.pubsub import PubSubAgentRegistry, _durable
from dagger_nb.pubsub.bus import EVENT_WINDOW
from dagger_nb.pubsub.store import MessageLog

pytestmark = pytest.mark.anyio

Make = Callable[..., Any]


def stored_payloads(db: Path) -> list[Any]:
    """What another connection sees in the file right now (committed rows only)."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT payload FROM pubsub_messages ORDER BY seq").fetchall()
    connection.close()
    return [row[0] for row in rows]


async def test_publish_returns_once_the_message_is_committed(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make
) -> None:
    db = tmp_path / "bus.db"
    recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.register("reader")
    await bus.publish("news", 1)  # not delivering
    assert stored_payloads(db) == ["1"]
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        for number in (2, 3):
            await bus.publish("news", number)
            assert stored_payloads(db)[-1] == str(number)
        bus.stop()
    bus.close()


async def test_concurrent_publishers_share_transactions(
    tmp_path: Path, registry: PubSubAgentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    write = MessageLog.write

    def counting(log: MessageLog, batch: Any) -> None:
        writes.append(len(batch.messages))
        write(log, batch)

    monkeypatch.setattr(MessageLog, "write", counting)
    bus = dagger_nb.PubSub(db=tmp_path / "bus.db", registry=registry)
    async with anyio.create_task_group() as group:
        for number in range(50):
            group.start_soon(bus.publish, "news", number)
    assert sum(writes) == 50
    assert len([size for size in writes if size]) < 10  # 50 publishers, a handful of transactions
    assert sorted(bus.history_frame()["payload"]) == list(range(50))
    bus.close()


async def test_a_failed_write_fails_publish_and_the_message_is_neither_stored_nor_delivered(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make
) -> None:
    db = tmp_path / "bus.db"
    reader = recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(db=db, registry=registry)
    node = bus.register("reader")
    with sqlite3.connect(db) as connection:  # a real SQLite failure on exactly one row
        connection.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON pubsub_messages WHEN NEW.payload = '\"poison\"'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    connection.close()
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        await bus.publish("news", "before")
        with pytest.raises(dagger_nb.StorageError, match=f"cannot write the pub/sub log '{db}': refused"):
            await bus.publish("news", "poison")
        await bus.publish("news", "after")
        await bus.wait_idle()
        bus.stop()
    assert reader.payloads == ["before", "after"]
    assert bus.history_frame()["payload"].tolist() == ["before", "after"]
    assert bus.history_frame()["delivered_to"].tolist() == [[node], [node]]
    bus.close()


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "db"])
async def test_a_publisher_cancelled_on_a_full_queue_leaves_no_half_delivered_message(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make, durable: bool
) -> None:
    release = anyio.Event()
    fast = recorder("fast", subscribe=["work"])

    @dagger_nb.pubsub_agent("slow", subscribe=["work"], registry=registry)
    async def slow(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        await release.wait()

    bus = dagger_nb.PubSub(db=tmp_path / "bus.db" if durable else None, registry=registry, queue_size=1)
    bus.register("fast")
    bus.register("slow")
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        await bus.publish("work", 1)  # slow's handler holds it
        await wait_all_tasks_blocked()
        await bus.publish("work", 2)  # fills slow's queue
        with anyio.move_on_after(0.2) as waiting:  # fast has room, slow has none: this one waits
            await bus.publish("work", 3)
        assert waiting.cancelled_caught
        release.set()
        await bus.wait_idle()
        bus.stop()
    assert fast.payloads == [1, 2]
    assert bus.history_frame()["payload"].tolist() == [1, 2]
    bus.close()


async def test_memory_stays_bounded_however_long_the_log(
    tmp_path: Path, registry: PubSubAgentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_durable, "REPLAY_PAGE", 40)
    db = tmp_path / "bus.db"
    bus = dagger_nb.PubSub(db=db, registry=registry, queue_size=5)
    async with anyio.create_task_group() as group:  # 2,000 messages nobody listens to yet
        for start in range(0, 2000, 100):
            for number in range(start, start + 100):
                group.start_soon(bus.publish, "log", number)
            await wait_all_tasks_blocked()
    most_held = 0
    handled: list[int] = []

    @dagger_nb.pubsub_agent("late", subscribe=["log"], registry=registry)
    async def late(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        nonlocal most_held
        node = bus._nodes[ctx.node_id]
        most_held = max(most_held, len(node.backlog) + len(node.queue))
        handled.append(message.payload)

    bus.register("late")
    await bus.run(until_idle=True)
    assert sorted(handled) == list(range(2000))
    assert most_held <= 40 + 5  # one page of the replay plus the queue
    assert bus._dispatch.records == []  # with db= the file is the history
    bus.close()


async def retained_after_delivering(db: Path, registry: PubSubAgentRegistry, count: int) -> tuple[int, int]:
    """Bytes a durable bus still holds after ``count`` messages were published and handled,
    and how many events it keeps."""
    handled = 0

    @dagger_nb.pubsub_agent("counter", subscribe=["log"], registry=registry)
    async def counter(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        nonlocal handled
        handled += 1

    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.register("counter")
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        async with anyio.create_task_group() as group:
            group.start_soon(bus.run)
            for number in range(count):
                await bus.publish("log", {"number": number, "text": "x" * 100})
            await bus.wait_idle()
            bus.stop()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert handled == count
    kept = len(bus.events.history)
    assert bus.events.dropped == bus.events.emitted - kept > 0
    bus.close()
    return retained, kept


async def test_a_durable_bus_holds_a_bounded_window_of_events_however_many_messages(
    tmp_path: Path, registry: PubSubAgentRegistry
) -> None:
    small, small_kept = await retained_after_delivering(tmp_path / "small.db", registry, 2_000)
    large, large_kept = await retained_after_delivering(tmp_path / "large.db", registry, 20_000)
    assert small_kept == large_kept == EVENT_WINDOW
    assert large - small < 1_000_000, (small, large)  # 18,000 more messages cost no more memory


async def test_a_publisher_cancelled_while_its_commit_is_pending_leaves_its_message_whole(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make
) -> None:
    db = tmp_path / "bus.db"
    reader = recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(db=db, registry=registry)
    node = bus.register("reader")
    with anyio.CancelScope() as scope:
        scope.cancel()  # the cancellation lands on the yield before the group commit
        await bus.publish("news", "cancelled")
    assert scope.cancelled_caught
    assert stored_payloads(db) == ['"cancelled"']  # decided before publish left: stored, so routed
    await bus.run(until_idle=True)
    assert reader.payloads == ["cancelled"]
    assert bus.history_frame()["delivered_to"].tolist() == [[node]]
    bus.close()


async def test_a_stop_while_subscribers_wait_on_their_commit_leaves_their_progress_committed(
    tmp_path: Path, registry: PubSubAgentRegistry, recorder: Make
) -> None:
    db = tmp_path / "bus.db"
    readers = [recorder(f"reader{index}", subscribe=["news"]) for index in range(3)]
    bus = dagger_nb.PubSub(db=db, registry=registry)
    for index in range(3):
        bus.register(f"reader{index}")
    for number in range(20):
        await bus.publish("news", number)
    handled = 0

    def stop_midway(event: Any) -> None:
        nonlocal handled
        if type(event).__name__ == "MessageDelivered":
            handled += 1
            if handled == 25:  # inside a round: the others are about to wait on the commit
                bus.stop()

    bus.events.add_listener(stop_midway)
    await bus.run()
    bus.events.remove_listener(stop_midway)
    with sqlite3.connect(db) as connection:
        committed = connection.execute("SELECT count(*) FROM pubsub_deliveries").fetchone()[0]
    connection.close()
    assert committed == sum(len(reader.messages) for reader in readers)  # every handled message's row
    assert bus._dispatch.outstanding == 60 - committed  # settled exactly what was handled
    await bus.run(until_idle=True)
    assert [reader.payloads for reader in readers] == [list(range(20))] * 3
    bus.close()
