"""EventStream: events emitted one by one or several at once reach listeners and subscribers in order."""

from __future__ import annotations

import anyio
import pytest

from dagger_nb.errors import DaggerWarning
from dagger_nb.events import EventStream


def test_emit_many_calls_listeners_per_event_in_order_and_drops_a_failing_one() -> None:
    stream: EventStream[int] = EventStream()
    heard: list[int] = []

    def fails_on_two(event: int) -> None:
        if event == 2:
            raise ValueError("listener bug")

    stream.add_listener(heard.append)
    stream.add_listener(fails_on_two)
    stream.emit(0)
    with pytest.warns(DaggerWarning, match="raised ValueError\\('listener bug'\\); it was removed"):
        stream.emit_many([1, 2, 3])
    stream.emit_many([4, 2])  # the failing listener is gone: no second warning (warnings are errors here)
    assert heard == [0, 1, 2, 3, 4, 2]
    assert stream.history == [0, 1, 2, 3, 4, 2]


@pytest.mark.anyio
async def test_a_waiting_subscriber_gets_a_batch_then_the_end() -> None:
    stream: EventStream[str] = EventStream()
    received: list[str] = []

    async def consume() -> None:
        async for event in stream.subscribe():
            received.append(event)

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        await anyio.wait_all_tasks_blocked()  # the subscriber waits for its first event
        stream.emit_many(["a", "b"])
        await anyio.wait_all_tasks_blocked()
        assert received == ["a", "b"]
        stream.emit_many([])
        stream.close()
    assert received == ["a", "b"]


def test_emit_many_on_a_closed_stream_is_an_error() -> None:
    stream: EventStream[int] = EventStream()
    stream.close()
    with pytest.raises(RuntimeError, match="closed event stream"):
        stream.emit_many([1])


def test_emit_many_stops_where_a_listener_closed_the_stream() -> None:
    stream: EventStream[int] = EventStream()
    stream.add_listener(lambda event: stream.close() if event == 1 else None)
    with pytest.raises(RuntimeError, match="closed event stream"):
        stream.emit_many([1, 2])
    assert stream.history == [1]
