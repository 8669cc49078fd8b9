"""Channel, input and output schemas, and handler failures: the dead letters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import dagger_nb
from dagger_nb.pubsub import PubSubAgentRegistry

pytestmark = pytest.mark.anyio

Make = Callable[..., Any]

NEWS = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["topic"],
}


async def test_channel_schema_is_checked_at_publish_and_nothing_is_delivered(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    reader = recorder("reader", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    bus.create_channel("news", schema=NEWS)
    bus.register("reader")
    with pytest.raises(dagger_nb.SchemaValidationError) as caught:
        await bus.publish("news", {"topic": "ai", "score": "high"})
    assert (
        str(caught.value) == "channel 'news': invalid payload at '$.score': 'high' is not of type 'integer'"
    )
    assert caught.value.path == "$.score" and caught.value.where == "channel 'news'"
    with pytest.raises(
        dagger_nb.SchemaValidationError,
        match=r"^channel 'news': invalid payload at '\$': 'topic' is a required property$",
    ):
        await bus.publish("news", {})
    await bus.publish("news", {"topic": "ok"})
    await bus.run(until_idle=True)
    assert reader.payloads == [{"topic": "ok"}]
    assert len(bus.history_frame()) == 1
    assert bus.dead_letters_frame().empty


async def test_create_channel_again_replaces_its_schema(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    bus.create_channel("n", schema={"type": "string"})
    with pytest.raises(dagger_nb.SchemaValidationError):
        await bus.publish("n", 1)
    bus.create_channel("n")
    await bus.publish("n", 1)
    assert bus.channels_frame()["schema"].tolist() == [None]


async def test_invalid_channel_schema_raises(registry: PubSubAgentRegistry) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    with pytest.raises(dagger_nb.InvalidSchemaError, match=r"^channel 'n': invalid JSON Schema: "):
        bus.create_channel("n", schema={"type": 5})
    with pytest.raises(dagger_nb.PubSubError, match="a channel needs a non-empty name, got ''"):
        bus.create_channel("")


@pytest.mark.parametrize(
    ("payload", "path", "problem"),
    [
        ({"when": object()}, "$.when", "not a JSON value"),
        ({"a": [1, {"b": {1, 2}}]}, "$.a[1].b", "not a JSON value"),
        (object(), "$", "not a JSON value"),
        ({"a": {1: 2}}, "$.a", "object key 1 is not text"),
    ],
    ids=["object", "nested-set", "top-level", "int-key"],
)
async def test_non_json_payloads_are_refused(
    registry: PubSubAgentRegistry, payload: object, path: str, problem: str
) -> None:
    bus = dagger_nb.PubSub(registry=registry)
    with pytest.raises(dagger_nb.SchemaValidationError) as caught:
        await bus.publish("n", payload)
    assert str(caught.value) == f"channel 'n': invalid payload at '{path}': {problem}"
    assert bus.history_frame().empty


async def test_input_schema_rejects_to_dead_letters_and_others_still_get_it(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    picky = recorder("picky", subscribe=["news"], input_schema=NEWS)
    easy = recorder("easy", subscribe=["news"])
    bus = dagger_nb.PubSub(registry=registry)
    picky_id = bus.register("picky")
    easy_id = bus.register("easy")
    bad = await bus.publish("news", {"headline": "no topic"})
    good = await bus.publish("news", {"topic": "fine"})
    await bus.run(until_idle=True)
    assert picky.payloads == [{"topic": "fine"}]
    assert easy.payloads == [{"headline": "no topic"}, {"topic": "fine"}]
    dead = bus.dead_letters_frame()
    assert list(dead.columns) == ["message_id", "channel", "agent", "reason", "traceback", "logs"]
    assert dead.to_dict("records") == [
        {
            "message_id": bad.message_id,
            "channel": "news",
            "agent": picky_id,
            "reason": "agent 'picky' input: invalid payload at '$': 'topic' is a required property",
            "traceback": None,  # a rejection: no handler ran
            "logs": None,
        }
    ]
    delivered = dict(zip(bus.history_frame()["message_id"], bus.history_frame()["delivered_to"], strict=True))
    assert delivered[bad.message_id] == [easy_id]
    assert sorted(delivered[good.message_id]) == sorted([picky_id, easy_id])
    assert bus.agents_frame().set_index("agent").loc["picky", "rejected"] == 1


async def test_output_schema_is_checked_in_ctx_publish(registry: PubSubAgentRegistry, recorder: Make) -> None:
    @dagger_nb.pubsub_agent(
        "writer", subscribe=["in"], publish=["out"], output_schema={"type": "string"}, registry=registry
    )
    async def writer(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        await ctx.publish("out", message.payload)

    out = recorder("out", subscribe=["out"])
    bus = dagger_nb.PubSub(registry=registry)
    writer_id = bus.register("writer")
    bus.register("out")
    await bus.publish("in", 42)
    await bus.publish("in", "text")
    await bus.run(until_idle=True)
    assert out.payloads == ["text"]
    assert bus.dead_letters_frame()[["agent", "reason"]].values.tolist() == [
        [
            writer_id,
            "agent 'writer' output: invalid payload at '$': "
            "42 is not of type 'string'",
        ]
    ]


async def test_a_failing_handler_does_not_stop_anything(
    registry: PubSubAgentRegistry, recorder: Make
) -> None:
    calls: list[int] = []

    @dagger_nb.pubsub_agent("flaky", subscribe=["numbers"], registry=registry)
    async def flaky(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        calls.append(message.payload)
        if message.payload % 2:
            raise ValueError(f"odd number {message.payload}")

    steady = recorder("steady", subscribe=["numbers"])
    bus = dagger_nb.PubSub(registry=registry)
    flaky_id = bus.register("flaky")
    bus.register("steady")
    messages = [await bus.publish("numbers", number) for number in range(5)]
    await bus.run(until_idle=True)
    assert calls == steady.payloads == [0, 1, 2, 3, 4]
    dead = bus.dead_letters_frame()
    assert dead["message_id"].tolist() == [messages[1].message_id, messages[3].message_id]
    assert dead["agent"].tolist() == [flaky_id, flaky_id]
    assert dead["reason"].tolist() == ["ValueError: odd number 1", "ValueError: odd number 3"]
    row = bus.agents_frame().set_index("node_id").loc[flaky_id]
    assert (row["delivered"], row["failed"], row["queued"]) == (5, 2, 0)
    # A failed delivery still counts as delivered: the handler got the message.
    assert all(flaky_id in nodes for nodes in bus.history_frame()["delivered_to"])


async def test_a_failing_sync_handler_is_a_dead_letter_too(registry: PubSubAgentRegistry) -> None:
    @dagger_nb.pubsub_agent("broken", subscribe=["in"], registry=registry)
    def broken(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        raise KeyError("missing")

    bus = dagger_nb.PubSub(registry=registry)
    bus.register("broken")
    await bus.publish("in", 1)
    await bus.publish("in", 2)
    await bus.run(until_idle=True)
    assert bus.dead_letters_frame()["reason"].tolist() == ["KeyError: 'missing'"] * 2
