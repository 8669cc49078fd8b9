"""Running, stopping, starting in the background, context manager, sync facade, strictness."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

import dagger_nb
from dagger_nb.errors import NoRunningLoop
from dagger_nb.pubsub import PubSubAgentRegistry

Make = Callable[..., Any]


def define_chain(registry: PubSubAgentRegistry, length: int) -> None:
    """Agents step0 .. step{length-1}: step i listens on c{i} and forwards payload + 1 to c{i+1}."""
    for index in range(length):

        async def step(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext, index: int = index) -> None:
            await ctx.publish(f"c{index + 1}", message.payload + 1)

        dagger_nb.pubsub_agent(
            f"step{index}", subscribe=[f"c{index}"], publish=[f"c{index + 1}"], registry=registry
        )(step)


@pytest.mark.anyio
async def test_run_until_idle_waits_for_chain_reactions(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    define_chain(registry, 5)
    end = recorder("end", subscribe=["c5"])
    bus = dagger_nb.PubSub(registry=registry)
    for index in range(5):
        bus.register(f"step{index}")
    bus.register("end")
    await bus.publish("c0", 0)
    await bus.publish("c0", 100)
    await bus.run(until_idle=True)
    assert end.payloads == [5, 105]
    assert bus.is_idle() and not bus.running


@pytest.mark.anyio
async def test_run_until_idle_with_nothing_to_do_returns_at_once(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    with anyio.fail_after(5):
        await bus.run(until_idle=True)


@pytest.mark.anyio
async def test_stop_ends_delivery_within_a_second_and_no_handler_starts_after(
    registry: PubSubAgentRegistry,
) -> None:
    started: list[int] = []
    entered: list[anyio.Event] = []

    @dagger_nb.pubsub_agent("stuck", subscribe=["work"], registry=registry)
    async def stuck(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        started.append(message.payload)
        entered[-1].set()
        await anyio.sleep_forever()

    async def run_until_a_handler_runs_then_stop() -> float:
        entered.append(anyio.Event())
        async with anyio.create_task_group() as group:
            group.start_soon(bus.run)
            await entered[-1].wait()
            begun = time.monotonic()
            bus.stop()
        return time.monotonic() - begun

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("stuck")
    for number in range(3):
        await bus.publish("work", number)
    assert await run_until_a_handler_runs_then_stop() < 1.0
    assert started == [0]
    assert not bus.running
    await wait_all_tasks_blocked()
    assert started == [0]
    # The interrupted message and the queued ones are still owed, in order:
    # the next run hands message 0 over again.
    assert bus.agents_frame()["queued"].tolist() == [3]
    await run_until_a_handler_runs_then_stop()
    assert started == [0, 0]


@pytest.mark.anyio
async def test_cancelling_run_ends_delivery(registry: PubSubAgentRegistry) -> None:
    entered = anyio.Event()

    @dagger_nb.pubsub_agent("sleeper", subscribe=["s"], registry=registry)
    async def sleeper(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        entered.set()
        await anyio.sleep_forever()

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("sleeper")
    await bus.publish("s", 1)
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        await entered.wait()
        group.cancel_scope.cancel()
    assert not bus.running
    assert bus.agents_frame()["queued"].tolist() == [1]


@pytest.mark.anyio
async def test_run_timeout_stops_delivery_and_returns(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    begun = time.monotonic()
    await bus.run(timeout=0.05)
    assert time.monotonic() - begun < 2
    assert not bus.running


@pytest.mark.anyio
async def test_one_run_at_a_time(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        await wait_all_tasks_blocked()
        with pytest.raises(dagger_nb.ExecutionError, match="already delivering"):
            await bus.run()
        with pytest.raises(dagger_nb.ExecutionError, match="already delivering"):
            bus.start()
        with pytest.raises(dagger_nb.ExecutionError, match=r"^publish_sync\(\) while delivery runs"):
            bus.publish_sync("news", 1)
        bus.stop()


@pytest.mark.anyio
async def test_start_returns_a_handle_at_once(registry: PubSubAgentRegistry, recorder: Make) -> None:
    reader = recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("reader")
    handle = bus.start()
    assert handle.status == "running" and not handle.done
    await bus.publish("news", 1)
    await bus.wait_idle()
    assert reader.payloads == [1]
    assert bus.running
    events = handle.subscribe()  # this delivery's events: the channel was created before it began
    assert type(await events.__anext__()).__name__ == "DeliveryStarted"
    await events.aclose()
    handle.stop()
    with anyio.fail_after(5):
        await handle
    assert handle.done and handle.status == "stopped"
    assert not bus.running
    second = bus.start()
    second.stop()
    await second.wait()
    assert second.status == "stopped"


@pytest.mark.anyio
async def test_start_with_a_timeout(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    handle = bus.start(timeout=0.05)
    with anyio.fail_after(5):
        await handle.wait()
    assert handle.status == "stopped"


def test_start_without_a_running_loop_says_what_to_do(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    with pytest.raises(
        NoRunningLoop,
        match=r"^PubSub\.start\(\) needs a running event loop \(a notebook "
        r"cell or async code\); in a script use pubsub\.run_sync\(\)$",
    ):
        bus.start()
    assert bus._handle is None  # nothing was started


@pytest.mark.anyio
async def test_async_with_delivers_until_idle_then_closes(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    define_chain(registry, 2)
    end = recorder("end", subscribe=["c2"])
    async with dagger_nb.PubSub(registry=registry) as bus:
        assert bus.running
        for name in ("step0", "step1", "end"):
            bus.register(name)
        await bus.publish("c0", 1)
    assert end.payloads == [3]
    assert bus.closed and not bus.running
    with pytest.raises(dagger_nb.ExecutionError, match=r"^this PubSub is closed$"):
        await bus.publish("c0", 1)
    assert len(bus.history_frame()) == 3


@pytest.mark.anyio
async def test_async_with_stops_at_once_on_error(registry: PubSubAgentRegistry) -> None:
    @dagger_nb.pubsub_agent("forever", subscribe=["f"], registry=registry)
    async def forever(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        await anyio.sleep_forever()

    with pytest.raises(RuntimeError, match="boom"):
        async with dagger_nb.PubSub(registry=registry) as bus:
            bus.register("forever")
            await bus.publish("f", 1)
            raise RuntimeError("boom")
    assert bus.closed


def test_run_sync_and_publish_sync_in_a_script(registry: PubSubAgentRegistry, recorder: Make) -> None:
    define_chain(registry, 1)
    end = recorder("end", subscribe=["c1"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("step0")
    bus.register("end")
    message = bus.publish_sync("c0", 1)
    assert isinstance(message, dagger_nb.Message)
    bus.run_sync(until_idle=True)
    assert end.payloads == [2]


@pytest.mark.anyio
async def test_run_sync_inside_a_running_loop(registry: PubSubAgentRegistry, recorder: Make) -> None:
    reader = recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("reader")
    bus.publish_sync("news", "from a notebook")
    bus.run_sync(until_idle=True)
    assert reader.payloads == ["from a notebook"]


@pytest.mark.anyio
async def test_strict_bus_refuses_unknown_channels(registry: PubSubAgentRegistry, recorder: Make) -> None:
    recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry, strict=True)
    with pytest.raises(dagger_nb.ChannelNotFound, match=r"^unknown channel 'news' \(known: none\)$"):
        bus.register("reader")
    bus.create_channel("news")
    bus.create_channel("alerts")
    bus.register("reader")
    with pytest.raises(
        dagger_nb.ChannelNotFound, match=r"^unknown channel 'sports' \(known: alerts, news\)$"
    ) as caught:
        await bus.publish("sports", 1)
    assert caught.value.channel == "sports"
    with pytest.raises(dagger_nb.ChannelNotFound):
        bus.history_frame("sports")
    assert bus.history_frame().empty


@pytest.mark.anyio
async def test_dynamic_channels_are_created_on_first_use(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    await bus.publish("surprise", 1)
    assert bus.channels_frame()["channel"].tolist() == ["surprise"]
    assert bus.history_frame("surprise")["payload"].tolist() == [1]
    assert bus.history_frame("elsewhere").empty


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(dagger_nb.PubSubError, match="queue_size must be a positive integer, got 0"):
        dagger_nb.PubSub(queue_size=0)


def test_close_is_idempotent_and_keeps_frames_readable(registry: PubSubAgentRegistry, recorder: Make) -> None:
    recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.register("reader")
    bus.close()
    bus.close()
    assert bus.closed
    assert bus.agents_frame()["agent"].tolist() == ["reader"]
    with pytest.raises(dagger_nb.ExecutionError, match="closed"):
        bus.register("reader")
    with pytest.raises(dagger_nb.ExecutionError, match="closed"):
        bus.unregister(bus.node_ids()[0])


def test_a_bus_dropped_without_close_leaves_no_unclosed_streams(registry: PubSubAgentRegistry) -> None:
    dagger_nb.pubsub_agent("a", subscribe=["x"], registry=registry)(lambda message, ctx: None)

    def use_and_drop() -> None:
        bus = dagger_nb.PubSub(registry=registry)
        bus.register("a")
        bus.publish_sync("x", 1)

    use_and_drop()
    gc.collect()  # an unclosed anyio stream would warn here, and warnings are errors
