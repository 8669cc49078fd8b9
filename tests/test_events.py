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


@pytest.mark.anyio
async def test_a_bounded_stream_keeps_its_last_events_and_a_late_subscriber_learns_what_it_missed() -> None:
    stream: EventStream[int] = EventStream(limit=3)
    stream.emit_many([0, 1, 2])
    stream.emit(3)
    stream.emit_many([4, 5])
    stream.close()
    assert list(stream.history) == [3, 4, 5]
    assert (stream.emitted, stream.dropped) == (6, 3)
    late = stream.subscribe()
    assert [event async for event in late] == [3, 4, 5]
    assert late.skipped == 3


@pytest.mark.anyio
async def test_a_subscriber_behind_a_bounded_stream_skips_ahead_in_order() -> None:
    stream: EventStream[int] = EventStream(limit=4)
    subscription = stream.subscribe()
    stream.emit_many([0, 1])
    assert [await subscription.__anext__(), await subscription.__anext__()] == [0, 1]
    for event in range(2, 12):  # the subscriber reads nothing while 10 more arrive
        stream.emit(event)
    stream.close()
    assert [event async for event in subscription] == [8, 9, 10, 11]
    assert subscription.skipped == 6  # 2 to 7 left the window unread
    assert len(stream.history) == 4


def test_an_unbounded_stream_keeps_everything_and_a_bad_limit_is_refused() -> None:
    stream: EventStream[int] = EventStream()
    stream.emit_many(list(range(5000)))
    assert len(stream.history) == 5000 and stream.dropped == 0
    with pytest.raises(ValueError, match="limit must be a positive integer or None, got 0"):
        EventStream(limit=0)
