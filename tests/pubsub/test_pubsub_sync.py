"""The synchronous forms never wait for delivery that cannot happen."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

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
    assert list(bus.history_frame("in")["payload"]) == [1, 2]


@dataclass
class Gate:
    """A sync handler that blocks until released, counting how many of its calls overlap."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: list[Any] = field(default_factory=list)
    active: int = 0
    most_at_once: int = 0

    def __call__(self, message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        with self.lock:
            self.calls.append(message.payload)
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        self.entered.set()
        self.release.wait(30)
        with self.lock:
            self.active -= 1


@pytest.mark.anyio
async def test_stop_then_start_never_runs_one_messages_sync_handler_twice_at_once(
    registry: PubSubAgentRegistry,
) -> None:
    gate = Gate()
    dagger_nb.pubsub_agent("slow", subscribe=["in"], registry=registry)(gate)
    bus = dagger_nb.PubSub(registry=registry)
    node = bus.register("slow")
    await bus.publish("in", "x")
    first = bus.start()
    await anyio.to_thread.run_sync(gate.entered.wait, 30)
    first.stop()
    second = bus.start()  # waits for the first run to end, which waits for the handler's thread
    await wait_all_tasks_blocked()
    assert not first.done
    assert gate.calls == ["x"]
    gate.release.set()
    await first
    await bus.wait_idle()
    second.stop()
    await second
    # The call that outlived stop() counts as handled: never handed over again.
    assert gate.calls == ["x"] and gate.most_at_once == 1
    assert bus.history_frame()["delivered_to"].tolist() == [[node]]
    bus.close()


@pytest.mark.anyio
async def test_a_sync_handler_outliving_stop_timeout_is_reported_by_name(registry: PubSubAgentRegistry) -> None:
    gate = Gate()
    dagger_nb.pubsub_agent("stubborn", subscribe=["in"], registry=registry)(gate)
    bus = dagger_nb.PubSub(registry=registry, stop_timeout=0.2)
    node = bus.register("stubborn")
    await bus.publish("in", "x")
    handle = bus.start()
    await anyio.to_thread.run_sync(gate.entered.wait, 30)
    handle.stop()
    try:
        with pytest.warns(
            dagger_nb.DaggerWarning,
            match=f"pub/sub agent 'stubborn' \\(node {node}\\): its sync handler was still running message",
        ):
            await handle
    finally:
        gate.release.set()
    assert bus.agents_frame()["queued"].tolist() == [1]  # not counted as handled: owed again
    bus.close()
