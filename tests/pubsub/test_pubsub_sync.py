"""The synchronous forms never wait for delivery that cannot happen."""

from __future__ import annotations

import time

import pytest

import dagger_nb
from dagger_nb.pubsub import PubSubAgentRegistry


def test_publish_sync_past_a_full_queue_is_an_error_not_a_hang(registry: PubSubAgentRegistry) -> None:
    @dagger_nb.pubsub_agent("sink", subscribe=["in"], registry=registry)
    async def sink(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        pass

    bus = dagger_nb.PubSub(registry=registry, queue_size=2)
    node = bus.register("sink")
    bus.publish_sync("in", 1)
    bus.publish_sync("in", 2)
    with pytest.raises(dagger_nb.PubSubError, match=f"the queue of '{node}' is full \\(queue_size=2\\) and nothing "
                                                     "is delivering"):
        bus.publish_sync("in", 3)
    bus.run_sync(until_idle=True)
    assert list(bus.history("in")["payload"]) == [1, 2]


@pytest.mark.anyio
async def test_stop_does_not_wait_for_a_blocking_sync_handler(registry: PubSubAgentRegistry) -> None:
    import anyio

    entered = anyio.Event()
    token = anyio.lowlevel.current_token()

    @dagger_nb.pubsub_agent("slow", subscribe=["in"], registry=registry)
    def slow(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        anyio.from_thread.run_sync(entered.set, token=token)
        time.sleep(3)

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("slow")
    await bus.publish("in", "x")
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        await entered.wait()
        stopped_at = time.monotonic()
        bus.stop()
    assert time.monotonic() - stopped_at < 1  # the handler sleeps 3 s in its abandoned thread
