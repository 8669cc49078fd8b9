"""Delivery semantics: exactly once, in order, never to the sender, never dropped."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

import dagger_nb
from dagger_nb.pubsub import PubSubAgentRegistry

pytestmark = pytest.mark.anyio

Make = Callable[..., Any]


async def test_every_subscriber_gets_every_message_exactly_once_in_publish_order(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    subscribers = [recorder(f"sub{index}", subscribe=["numbers"]) for index in range(3)]
    bus = dagger_nb.PubSub(registry=registry, queue_size=7)
    for subscriber in subscribers:
        bus.register(subscriber.agent)
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        for number in range(300):
            await bus.publish("numbers", number)
        await bus.wait_idle()
        bus.stop()
    for subscriber in subscribers:
        assert subscriber.payloads == list(range(300))
    assert bus.history_frame("numbers")["payload"].tolist() == list(range(300))


async def test_an_agent_never_receives_its_own_message_but_other_subscribers_do(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    heard: list[Any] = []

    @dagger_nb.pubsub_agent("talker", subscribe=["chat"], publish=["chat"], registry=registry)
    async def talker(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        heard.append(message.payload)
        if message.payload == "hello":
            await ctx.publish("chat", "hi back")

    listener = recorder("listener", subscribe=["chat"])
    bus = dagger_nb.PubSub(registry=registry)
    talker_id = bus.register("talker")
    bus.register("listener")
    await bus.publish("chat", "hello")
    await bus.run(until_idle=True)
    assert heard == ["hello"]
    assert listener.payloads == ["hello", "hi back"]
    assert [message.source for message in listener.messages] == ["user", talker_id]


async def test_one_agent_registered_twice_is_two_subscribers(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    twice = recorder("twice", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    first, second = bus.register(twice.agent), bus.register("twice")
    assert (first, second) == ("twice", "twice_2")  # the names given, numbered when repeated
    await bus.publish("news", 1)
    await bus.run(until_idle=True)
    assert twice.payloads == [1, 1]
    assert sorted(bus.history_frame()["delivered_to"][0]) == sorted([first, second])


async def test_messages_published_before_run_are_delivered_when_it_starts(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    early = recorder("early", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("early")
    for number in range(3):
        await bus.publish("news", number)
    assert early.payloads == []
    await bus.run(until_idle=True)
    assert early.payloads == [0, 1, 2]


async def test_messages_published_before_any_subscriber_wait_for_one(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    first = recorder("first", subscribe=["news"])
    second = recorder("second", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    await bus.publish("news", "kept")
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        await wait_all_tasks_blocked()
        bus.register("first")
        await bus.wait_idle()
        assert first.payloads == ["kept"]
        bus.register("second")
        await bus.publish("news", "live")
        await bus.wait_idle()
        bus.stop()
    assert first.payloads == ["kept", "live"]
    assert second.payloads == ["kept", "live"]


async def test_a_listener_never_quits_when_idle(registry: PubSubAgentRegistry) -> None:
    got = anyio.Event()
    received: list[Any] = []

    @dagger_nb.pubsub_agent("patient", subscribe=["late"], registry=registry)
    async def patient(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        received.append(message.payload)
        got.set()

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("patient")
    handle = bus.start()
    await anyio.sleep(1.0)  # the point of the test: a full second of silence
    await bus.publish("late", "still there?")
    with anyio.fail_after(5):
        await got.wait()
    handle.stop()
    await handle
    assert received == ["still there?"]


async def test_a_full_queue_makes_publish_wait_and_nothing_is_dropped(registry: PubSubAgentRegistry) -> None:
    release = anyio.Event()
    received: list[int] = []

    @dagger_nb.pubsub_agent("slow", subscribe=["work"], registry=registry)
    async def slow(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        await release.wait()
        received.append(message.payload)

    bus = dagger_nb.PubSub(registry=registry, queue_size=2)
    bus.register("slow")
    published: list[int] = []

    async def publish_all() -> None:
        for number in range(6):
            await bus.publish("work", number)
            published.append(number)

    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        group.start_soon(publish_all)
        await wait_all_tasks_blocked()
        # One message is in the handler, two fill the queue, the fourth publish waits
        # without being queued anywhere yet (cancelled there, it would leave no trace).
        assert published == [0, 1, 2]
        assert bus.agents_frame()["queued"].tolist() == [3]
        release.set()
        await bus.wait_idle()
        bus.stop()
    assert published == received == list(range(6))


async def test_no_message_is_lost_with_tiny_queues_and_several_publishers(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    subscribers = [recorder(f"sub{index}", subscribe=["mix"]) for index in range(3)]
    bus = dagger_nb.PubSub(registry=registry, queue_size=1)
    for subscriber in subscribers:
        bus.register(subscriber.agent)

    async def publisher(name: str) -> None:
        for number in range(100):
            await bus.publish("mix", [name, number])

    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        async with anyio.create_task_group() as publishers:
            for name in "abc":
                publishers.start_soon(publisher, name)
        await bus.wait_idle()
        bus.stop()
    order = [tuple(payload) for payload in bus.history_frame()["payload"]]
    assert len(order) == 300
    for subscriber in subscribers:
        assert [tuple(payload) for payload in subscriber.payloads] == order
    for name in "abc":
        assert [number for who, number in order if who == name] == list(range(100))


async def test_unregistered_agent_gets_what_it_missed_when_it_registers_again(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    agent = recorder("returning", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    node_id = bus.register("returning")
    await bus.publish("news", 1)
    await bus.run(until_idle=True)
    bus.unregister(node_id)
    await bus.publish("news", 2)
    await bus.publish("news", 3)
    await bus.run(until_idle=True)
    assert agent.payloads == [1]
    again = bus.register("returning")
    await bus.run(until_idle=True)
    assert agent.payloads == [1, 2, 3]
    assert bus.history_frame()["delivered_to"].tolist() == [[node_id], [again], [again]]
    with pytest.raises(dagger_nb.AgentNotFound, match=f"unknown agent '{node_id}'"):
        bus.unregister(node_id)


async def test_registering_while_running_starts_delivery_at_once(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    newcomer = recorder("newcomer", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        await wait_all_tasks_blocked()
        bus.register("newcomer")
        await bus.publish("news", "hi")
        await bus.wait_idle()
        bus.stop()
    assert newcomer.payloads == ["hi"]


async def test_register_by_name_looks_in_the_bus_registry(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    with pytest.raises(dagger_nb.AgentNotFound, match=r"^unknown agent 'ghost' \(registered: none\)$"):
        bus.register("ghost")
    with pytest.raises(
        dagger_nb.PubSubError, match="register\\(\\) takes a PubSubAgent or an agent name, got int"
    ):
        bus.register(3)  # type: ignore[arg-type]


async def test_context_exposes_agent_node_cache_and_bus(registry: PubSubAgentRegistry) -> None:
    seen: dict[str, Any] = {}

    @dagger_nb.pubsub_agent("curious", subscribe=["in"], publish=["out"], registry=registry)
    async def curious(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        seen.update(agent=ctx.agent, node_id=ctx.node_id, cache=ctx.cache, pubsub=ctx.pubsub)
        ctx.cache.insert("curious", "last", message.payload)
        await ctx.publish("out", {"echo": message.payload}, task_id="t-7")

    cache = dagger_nb.Cache()
    bus = dagger_nb.PubSub(registry=registry, cache=cache)
    node_id = bus.register("curious")
    await bus.publish("in", 5, task_id="t-7")
    await bus.run(until_idle=True)
    assert seen == {"agent": curious, "node_id": node_id, "cache": cache, "pubsub": bus}
    assert cache.get("curious", "last") == 5
    out = bus.history_frame("out")
    assert out["source"].tolist() == [node_id]
    assert out["payload"].tolist() == [{"echo": 5}]


async def test_task_id_travels_with_the_message(registry: PubSubAgentRegistry, recorder: Make) -> None:
    tracker = recorder("tracker", subscribe=["jobs"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("tracker")
    message = await bus.publish("jobs", {}, task_id="task-1", source="scheduler")
    await bus.run(until_idle=True)
    assert message.task_id == "task-1" and message.source == "scheduler" and message.channel == "jobs"
    assert tracker.messages == [message]


async def test_sync_handlers_run_in_a_worker_thread_and_publish_with_publish_sync(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    threads: list[int] = []

    @dagger_nb.pubsub_agent("blocking", subscribe=["in"], publish=["out"], registry=registry)
    def blocking(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        threads.append(threading.get_ident())
        sent = ctx.publish_sync("out", message.payload + 1)
        assert isinstance(sent, dagger_nb.Message)

    out = recorder("out", subscribe=["out"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("blocking")
    bus.register("out")
    await bus.publish("in", 1)
    await bus.run(until_idle=True)
    assert threads and threads[0] != threading.get_ident()
    assert out.payloads == [2]
    assert bus.dead_letters_frame().empty


async def test_a_sync_handler_calling_async_publish_gets_a_clear_dead_letter(
    registry: PubSubAgentRegistry,
) -> None:
    @dagger_nb.pubsub_agent("confused", subscribe=["in"], publish=["out"], registry=registry)
    def confused(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        ctx.publish("out", 1)

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("confused")
    await bus.publish("in", 1)
    await bus.run(until_idle=True)
    (reason,) = bus.dead_letters_frame()["reason"]
    assert reason == (
        "agent 'confused': ctx.publish() must be awaited on the event loop; "
        "a sync handler runs in a worker thread, so call ctx.publish_sync(...)"
    )
    assert bus.history_frame("out").empty


async def test_publishers_waiting_for_room_go_in_arrival_order_and_newcomers_queue_behind(
    registry: PubSubAgentRegistry,
) -> None:
    release = anyio.Event()
    received: list[str] = []

    @dagger_nb.pubsub_agent("slow", subscribe=["work"], registry=registry)
    async def slow(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        await release.wait()
        received.append(message.payload)

    bus = dagger_nb.PubSub(registry=registry, queue_size=1)
    bus.register("slow")
    with anyio.fail_after(10):  # a lost wake-up would leave the line waiting for good
        async with anyio.create_task_group() as group:
            group.start_soon(bus.run)
            await bus.publish("work", "in handler")
            await wait_all_tasks_blocked()
            await bus.publish("work", "queued")
            first_in_line = anyio.CancelScope()  # cancelled below while first in line

            async def never() -> None:
                with first_in_line:
                    await bus.publish("work", "never")

            group.start_soon(never)
            await wait_all_tasks_blocked()
            for name in ("a", "b", "c"):
                group.start_soon(bus.publish, "work", name)
                await wait_all_tasks_blocked()
            first_in_line.cancel()
            await wait_all_tasks_blocked()
            release.set()
            await anyio.sleep(0)
            await bus.publish("work", "late")  # arrives while a, b, c still wait: goes after them
            await bus.wait_idle()
            bus.stop()
    assert received == ["in handler", "queued", "a", "b", "c", "late"]
