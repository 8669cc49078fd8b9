"""The delivery handle and its report: the Handle contract, what a report counts, how a broken delivery
surfaces, the thread hop behind ``publish_sync``, and the deprecated names."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

import dagger_nb
from dagger_nb.handles import Handle
from dagger_nb.pubsub import PubSubAgentRegistry, PubSubStatus
from dagger_nb.pubsub.bus import EVENT_WINDOW
from dagger_nb.pubsub.events import MessagePublished, PubSubEvent

pytestmark = pytest.mark.anyio


def failing_and_rejecting_bus(registry: PubSubAgentRegistry, **options: Any) -> dagger_nb.PubSub:
    """``picky`` rejects anything but integers; ``fragile`` raises on 0 and forwards the rest to ``out``."""

    @dagger_nb.pubsub_agent("picky", subscribe=["in"], input_schema={"type": "integer"}, registry=registry)
    async def picky(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        pass

    @dagger_nb.pubsub_agent("fragile", subscribe=["in"], publish=["out"], registry=registry)
    async def fragile(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        if message.payload == 0:
            raise ValueError("zero")
        await ctx.publish("out", message.payload)

    bus = dagger_nb.PubSub(registry=registry, **options)
    bus.register("picky")
    bus.register("fragile")
    return bus


async def test_a_handles_report_counts_failed_calls_and_dead_letters(registry: PubSubAgentRegistry) -> None:
    bus = failing_and_rejecting_bus(registry)
    handle = bus.start()
    await wait_all_tasks_blocked()  # delivery has begun: what follows is counted
    await bus.publish("in", 0)
    await bus.publish("in", "word")
    await bus.publish("in", 2)
    await bus.wait_idle()
    handle.stop()
    report = await handle
    assert report is handle.report
    assert report.status is PubSubStatus.STOPPED and report.status == "stopped" and report.reason == "stopped"
    # fragile forwards "word" and 2 to out
    assert (report.published, report.channels) == (5, {"in": 3, "out": 2})
    # picky handles 0 and 2 and rejects "word"; fragile is called three times and raises once
    assert (report.delivered, report.failed, report.dead_lettered) == (5, 1, 2)
    assert report.error is None and handle.error is None
    assert report.started_at is not None and report.finished_at is not None
    assert report.started_at <= report.finished_at
    assert repr(report) == "<PubSubReport stopped (stopped): 5 published, 5 delivered, 1 failed, 2 dead-lettered>"
    assert sorted(bus.dead_letters_frame()[["agent", "reason"]].values.tolist()) == [
        ["fragile", "ValueError: zero"],
        ["picky", "agent 'picky' input: invalid payload at '$': 'word' is not of type 'integer'"],
    ]


async def test_run_returns_the_report_of_that_delivery_only(registry: PubSubAgentRegistry) -> None:
    bus = failing_and_rejecting_bus(registry)
    await bus.publish("in", 0)
    first = await bus.run(until_idle=True)
    assert (first.published, first.delivered, first.failed, first.dead_lettered) == (0, 2, 1, 1)
    await bus.publish("in", 1)
    await bus.publish("in", 0)
    second = await bus.run(until_idle=True)
    assert second.status == "stopped" and second.reason == "idle"
    # 1 and 0 were published before it began; fragile's forward of 1 during it
    assert (second.published, second.channels) == (1, {"out": 1})
    assert (second.delivered, second.failed, second.dead_lettered) == (4, 1, 1)
    timed_out = await bus.run(timeout=0.01)
    assert (timed_out.reason, timed_out.published, timed_out.delivered) == ("timeout", 0, 0)


async def test_the_handle_honours_the_handle_protocol(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    handle = bus.start()
    assert isinstance(handle, Handle)
    assert handle.status is PubSubStatus.RUNNING and not handle.done and handle.error is None
    heard: list[str] = []
    handle.add_listener(lambda event: heard.append(type(event).__name__))
    await wait_all_tasks_blocked()
    await bus.publish("news", 1)
    events = handle.subscribe()
    handle.cancel()
    with anyio.fail_after(5):
        report = await handle.wait()
    assert handle.done and handle.status is PubSubStatus.STOPPED and report.status is handle.status
    assert await handle is report
    assert heard == ["DeliveryStarted", "ChannelCreated", "MessagePublished", "DeliveryStopped"]
    with anyio.fail_after(5):  # the subscription ends with the delivery; the bus stays open
        assert [type(event).__name__ async for event in events] == heard
    assert not bus.closed


async def test_subscribe_after_the_end_replays_that_delivery_and_ends(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    handle = bus.start()
    await wait_all_tasks_blocked()
    await bus.publish("news", 1)
    handle.cancel()
    await handle
    await bus.publish("news", 2)  # after the delivery: not one of its events
    with anyio.fail_after(5):
        events = [event async for event in handle.subscribe()]
    assert [type(event).__name__ for event in events] == [
        "DeliveryStarted", "ChannelCreated", "MessagePublished", "DeliveryStopped"
    ]
    assert [event.message.payload for event in events if isinstance(event, MessagePublished)] == [1]
    bus.close()


async def test_a_second_delivery_neither_replays_nor_hears_the_first(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    first = bus.start()
    await wait_all_tasks_blocked()
    await bus.publish("news", "first")
    first.cancel()
    await first
    second = bus.start()
    heard: list[PubSubEvent] = []
    second.add_listener(heard.append)
    live = second.subscribe()
    await wait_all_tasks_blocked()
    await bus.publish("news", "second")
    second.cancel()
    await second
    with anyio.fail_after(5):
        events = [event async for event in live]
    assert [type(event).__name__ for event in events] == ["DeliveryStarted", "MessagePublished", "DeliveryStopped"]
    assert [event.message.payload for event in events if isinstance(event, MessagePublished)] == ["second"]
    assert heard == events
    first_heard: list[PubSubEvent] = []
    first.add_listener(first_heard.append)  # ended: a listener hears nothing more
    third = bus.start()
    await wait_all_tasks_blocked()
    await bus.publish("news", "third")
    third.cancel()
    await third
    assert first_heard == [] and heard == events  # nor does the second's, after its end
    bus.close()


async def test_subscribe_ends_when_the_delivery_left_the_bus_window(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    handle = bus.start()
    await wait_all_tasks_blocked()
    handle.cancel()
    await handle
    for number in range(EVENT_WINDOW + 1):  # the delivery's events all leave the window the bus keeps
        await bus.publish("news", number)
    with anyio.fail_after(5):
        assert [event async for event in handle.subscribe()] == []  # and nothing after its end
    bus.close()


async def test_subscribe_to_a_delivery_that_never_began_ends_at_once(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    handle = bus.start()
    events = handle.subscribe()
    handle.stop()  # before the background task began delivering
    with anyio.fail_after(5):
        assert [event async for event in events] == []
    assert handle.status == "stopped"
    bus.close()


async def test_closing_the_bus_before_delivery_began_cancels_the_handle(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    handle = bus.start()
    bus.close()
    with anyio.fail_after(5):
        report = await handle
    assert handle.status is PubSubStatus.CANCELLED and report.reason == "cancelled" and handle.error is None
    await wait_all_tasks_blocked()  # the background owner's task has ended too, and changed nothing
    assert handle.report is report


def refuse_deliveries(db: Path) -> None:
    """A real SQLite failure on every delivery row: the log cannot record what a handler did."""
    with sqlite3.connect(db) as connection:
        connection.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON pubsub_deliveries BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    connection.close()


@pytest.mark.parametrize("how", ["run", "start"])
async def test_broken_delivery_is_a_failed_report_not_an_exception(
    tmp_path: Path, registry: PubSubAgentRegistry, how: str
) -> None:
    db = tmp_path / "bus.db"
    bus = failing_and_rejecting_bus(registry, db=db)
    await bus.publish("in", 1)
    refuse_deliveries(db)
    if how == "run":
        report = await bus.run(until_idle=True)
    else:
        handle = bus.start()
        report = await handle
        assert handle.status is PubSubStatus.FAILED and handle.error is report.error
    assert report.status is PubSubStatus.FAILED and report.reason == "failed"
    assert isinstance(report.error, dagger_nb.StorageError)
    assert str(report.error) == f"cannot write the pub/sub log '{db}': refused"
    assert not bus.running
    bus.close()


async def test_async_with_raises_what_broke_delivery(tmp_path: Path, registry: PubSubAgentRegistry) -> None:
    db = tmp_path / "bus.db"
    bus = failing_and_rejecting_bus(registry, db=db)
    await bus.publish("in", 1)
    refuse_deliveries(db)
    with pytest.raises(ExceptionGroup) as raised:
        async with bus:
            await bus.wait_idle()
    assert raised.group_contains(dagger_nb.StorageError, match="refused")


def test_publish_sync_from_a_sync_handler_runs_on_the_loop_thread(registry: PubSubAgentRegistry) -> None:
    handler_threads: list[int] = []
    publishing_threads: list[int] = []

    @dagger_nb.pubsub_agent("doubler", subscribe=["in"], publish=["out"], registry=registry)
    def doubler(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        handler_threads.append(threading.get_ident())
        ctx.publish_sync("out", message.payload * 2)

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("doubler")
    bus.events.add_listener(
        lambda event: type(event).__name__ == "MessagePublished" and publishing_threads.append(threading.get_ident())
    )
    bus.publish_sync("in", 21)
    report = bus.run_sync(until_idle=True)  # a script: the loop runs on this thread
    assert report.status == "stopped" and report.published == 1 and report.channels == {"out": 1}
    assert bus.history_frame("out")["payload"].tolist() == [42]
    here = threading.get_ident()
    assert handler_threads and handler_threads[0] != here
    assert publishing_threads == [here, here]  # "in" from here, "out" carried here from the handler's thread
    bus.close()


async def test_publish_sync_on_the_loop_is_a_clear_dead_letter(registry: PubSubAgentRegistry) -> None:
    @dagger_nb.pubsub_agent("hasty", subscribe=["in"], publish=["out"], registry=registry)
    async def hasty(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        ctx.publish_sync("out", 1)

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("hasty")
    await bus.publish("in", 1)
    report = await bus.run(until_idle=True)
    assert report.failed == 1
    (reason,) = bus.dead_letters_frame()["reason"]
    assert reason == (
        "agent 'hasty': ctx.publish_sync() is for a sync handler's worker thread while delivery "
        "runs; an async handler awaits ctx.publish(...)"
    )


async def test_bus_publish_sync_from_a_worker_thread_while_delivering(registry: PubSubAgentRegistry) -> None:
    received: list[Any] = []

    @dagger_nb.pubsub_agent("reader", subscribe=["news"], registry=registry)
    async def reader(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        received.append(message.payload)

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("reader")
    handle = bus.start()
    await wait_all_tasks_blocked()
    message = await anyio.to_thread.run_sync(bus.publish_sync, "news", "from a thread")
    await bus.wait_idle()
    handle.stop()
    report = await handle
    assert received == ["from a thread"] and message.channel == "news" and report.published == 1


def test_a_sync_handler_can_stop_delivery_from_its_thread(registry: PubSubAgentRegistry) -> None:
    handled: list[Any] = []

    @dagger_nb.pubsub_agent("quitter", subscribe=["in"], registry=registry)
    def quitter(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        handled.append(message.payload)
        if message.payload == "enough":
            ctx.pubsub.stop()

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("quitter")
    for payload in (1, "enough", 3):
        bus.publish_sync("in", payload)
    report = bus.run_sync()  # no until_idle, no timeout: only the handler's stop() ends it
    assert (report.status, report.reason, report.delivered) == ("stopped", "stopped", 2)
    assert handled == [1, "enough"] and bus.agents_frame()["queued"].tolist() == [1]
    bus.close()


async def test_cancel_from_another_thread_reaches_an_idle_loop(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    handle = bus.start()
    await wait_all_tasks_blocked()  # delivering, and nothing to deliver: the loop sleeps until woken
    canceller = threading.Thread(target=handle.cancel)
    canceller.start()
    begun = anyio.current_time()
    with anyio.fail_after(10):
        report = await handle
    # Carried to the loop, the cancel wakes it; called on a sleeping loop from a foreign thread it
    # would wait for the next wake-up (here the 10 s deadline).
    assert anyio.current_time() - begun < 5 and report.reason == "stopped"
    canceller.join()


@pytest.mark.parametrize(
    ("old", "new", "args"),
    [
        ("history", "history_frame", ("news",)),
        ("dead_letters", "dead_letters_frame", ()),
        ("get_dot_graph", "to_dot", ()),
        ("agents", "agents_frame", ()),
        ("channels", "channels_frame", ()),
    ],
    ids=["history", "dead_letters", "get_dot_graph", "agents", "channels"],
)
async def test_deprecated_names_warn_and_answer_as_the_new_ones(
    registry: PubSubAgentRegistry, old: str, new: str, args: tuple[Any, ...]
) -> None:
    bus = failing_and_rejecting_bus(registry)
    await bus.publish("news", "hello")
    await bus.publish("in", "word")
    await bus.run(until_idle=True)
    with pytest.warns(DeprecationWarning, match=rf"^PubSub\.{old}\(\) is deprecated; use PubSub\.{new}\(\)$"):
        answer = getattr(bus, old)(*args)
    expected = getattr(bus, new)(*args)
    if isinstance(expected, str):
        assert answer == expected
    else:
        assert answer.equals(expected) and not answer.empty
