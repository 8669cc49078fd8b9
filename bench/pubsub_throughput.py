"""Pub/sub throughput against raw anyio memory object streams, measured in the same run.

One publisher, four subscribers, 50,000 small messages (``--messages`` to
change). The floor is the same fan-out written directly with anyio memory
object streams (one bounded stream and one consumer task per subscriber), once
without and once with a JSON Schema check per delivery (the same compiled
schema). dagger-nb runs the same shapes: plain subscribers, then subscribers
with that schema as their ``input_schema``; then durably, with a SQLite log
(``db=``): each ``publish`` returns only once its message is committed and each
subscriber commits its progress before taking its next message, so
``DB_PUBLISHERS`` publishers run at once and share transactions (group commit).

The durable run sends the same 50,000 messages through one bus and one file in
``--rounds`` rounds (default 5), each preceded by the floor on the same share of
messages, and its ratio is the median over the rounds of the floor's time over
the bus's time in the same round: the shared machine's speed drifts within a
run, and a ratio of two times taken half a minute apart measures that drift.

Targets: >= 0.33x the floor without a schema, >= 0.5x the schema-checking
floor with one, >= 0.33x the floor without a schema for the durable run.
Run: ``python bench/pubsub_throughput.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from dagger_nb.pubsub import PubSub, PubSubAgentRegistry, pubsub_agent
from dagger_nb.schema import compile_schema

SUBSCRIBERS = 4
DB_PUBLISHERS = 16
QUEUE_SIZE = 1000
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"seq": {"type": "integer", "minimum": 0}, "text": {"type": "string"}},
    "required": ["seq", "text"],
    "additionalProperties": False,
}


def payload(seq: int) -> dict[str, Any]:
    return {"seq": seq, "text": "hello"}


async def floor(messages: int, *, schema: dict[str, Any] | None) -> float:
    """Raw anyio streams: seconds to deliver ``messages`` to every subscriber."""
    compiled = compile_schema(schema, where="floor")
    streams = [anyio.create_memory_object_stream[dict[str, Any]](QUEUE_SIZE) for _ in range(SUBSCRIBERS)]
    received = [0] * SUBSCRIBERS

    async def consume(index: int, receive: Any) -> None:
        async with receive:
            async for item in receive:
                if compiled is not None and not compiled.is_valid(item):
                    raise ValueError("invalid payload")
                received[index] += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index, (_, receive) in enumerate(streams):
            group.start_soon(consume, index, receive)
        for seq in range(messages):
            item = payload(seq)
            for send, _ in streams:
                await send.send(item)
        for send, _ in streams:
            await send.aclose()
    elapsed = time.perf_counter() - started
    assert received == [messages] * SUBSCRIBERS, received
    return elapsed


def subscribed_bus(*, schema: dict[str, Any] | None, db: Path | None = None) -> tuple[PubSub, list[int]]:
    """A bus with the four counting subscribers, and their counts."""
    registry = PubSubAgentRegistry()
    received = [0] * SUBSCRIBERS
    for index in range(SUBSCRIBERS):

        async def handler(message: Any, ctx: Any, index: int = index) -> None:
            received[index] += 1

        pubsub_agent(f"sub{index}", subscribe=["bench"], input_schema=schema, registry=registry)(handler)
    bus = PubSub(registry=registry, queue_size=QUEUE_SIZE, db=db)
    for index in range(SUBSCRIBERS):
        bus.register(f"sub{index}")
    return bus, received


async def dagger(messages: int, *, schema: dict[str, Any] | None) -> float:
    """dagger-nb: seconds from the first publish until every subscriber handled every message."""
    bus, received = subscribed_bus(schema=schema)
    async with anyio.create_task_group() as group:
        await group.start(_serve, bus)
        started = time.perf_counter()
        for seq in range(messages):
            await bus.publish("bench", payload(seq))
        await bus.wait_idle()
        elapsed = time.perf_counter() - started
        bus.stop()
    bus.close()
    assert received == [messages] * SUBSCRIBERS, received
    assert not len(bus.dead_letters_frame())
    return elapsed


async def durable_rounds(messages: int, *, rounds: int, db: Path, publishers: int) -> list[tuple[float, float]]:
    """``(floor seconds, dagger-nb seconds)`` per round: ``messages`` sent through one durable bus in ``rounds``."""
    bus, received = subscribed_bus(schema=None, db=db)
    times = []
    async with anyio.create_task_group() as group:
        await group.start(_serve, bus)
        for round_ in range(rounds):
            first, last = messages * round_ // rounds, messages * (round_ + 1) // rounds
            floor_seconds = await floor(last - first, schema=None)
            started = time.perf_counter()

            async def publish_share(start: int, last: int = last) -> None:
                for seq in range(start, last, publishers):
                    await bus.publish("bench", payload(seq))

            async with anyio.create_task_group() as publishing:
                for start in range(first, min(first + publishers, last)):
                    publishing.start_soon(publish_share, start)
            await bus.wait_idle()
            times.append((floor_seconds, time.perf_counter() - started))
        bus.stop()
    bus.close()
    assert received == [messages] * SUBSCRIBERS, received
    assert not len(bus.dead_letters_frame())
    return times


async def _serve(bus: PubSub, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await bus.run()


def report(label: str, messages: int, seconds: float) -> float:
    rate = messages / seconds
    print(f"  {label:<34} {seconds:7.3f} s  {rate:10,.0f} msg/s  {rate * SUBSCRIBERS:10,.0f} deliveries/s")
    return rate


async def main() -> int:
    """Run the four variants (and the SQLite log); 0 if the targets are met, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--no-db", action="store_true", help="skip the durable (SQLite) run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the durable run (default 5)")
    args = parser.parse_args()
    n = args.messages
    print(f"pub/sub throughput: 1 publisher, {SUBSCRIBERS} subscribers, {n:,} messages, queue {QUEUE_SIZE}")
    floor_plain = report("anyio streams (floor)", n, await floor(n, schema=None))
    ours_plain = report("dagger-nb PubSub", n, await dagger(n, schema=None))
    floor_schema = report("anyio streams + schema (floor)", n, await floor(n, schema=SCHEMA))
    ours_schema = report("dagger-nb PubSub + input_schema", n, await dagger(n, schema=SCHEMA))
    db_ratio = None
    if not args.no_db:
        with tempfile.TemporaryDirectory() as folder:
            times = await durable_rounds(n, rounds=args.rounds, db=Path(folder, "bus.db"), publishers=DB_PUBLISHERS)
        report(f"dagger-nb PubSub db= ({DB_PUBLISHERS} publishers)", n, sum(ours for _, ours in times))
        ratios = [floor_seconds / ours for floor_seconds, ours in times]
        db_ratio = statistics.median(ratios)
        print(f"  durable rounds (floor over db= in each): {', '.join(f'{ratio:.2f}x' for ratio in ratios)}")
    plain_ratio = ours_plain / floor_plain
    schema_ratio = ours_schema / floor_schema
    print(
        f"ratio without schema: {plain_ratio:.2f}x the floor (target >= 0.33x) "
        f"{'OK' if plain_ratio >= 0.33 else 'MISSED'}"
    )
    print(
        f"ratio with schema:    {schema_ratio:.2f}x the floor (target >= 0.50x) "
        f"{'OK' if schema_ratio >= 0.5 else 'MISSED'}"
    )
    met = plain_ratio >= 0.33 and schema_ratio >= 0.5
    if db_ratio is not None:
        print(
            f"ratio durable (db=):  {db_ratio:.2f}x the floor, median round (target >= 0.33x) "
            f"{'OK' if db_ratio >= 0.33 else 'MISSED'}"
        )
        met = met and db_ratio >= 0.33
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
