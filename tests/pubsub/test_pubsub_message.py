"""The Message model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pydantic
import pytest

import dagger_nb


def test_message_has_a_uuid4_id_and_an_utc_timestamp() -> None:
    message = dagger_nb.Message(source="user", channel="news", payload={"topic": "ai"})
    assert uuid.UUID(message.message_id).version == 4
    assert message.timestamp.tzinfo is UTC
    assert abs((datetime.now(UTC) - message.timestamp).total_seconds()) < 60
    assert message.task_id is None
    assert message.payload == {"topic": "ai"}


def test_message_ids_are_unique() -> None:
    ids = {dagger_nb.Message(channel="c").message_id for _ in range(1000)}
    assert len(ids) == 1000


def test_message_is_frozen_and_forbids_unknown_fields() -> None:
    message = dagger_nb.Message(channel="news", payload=1)
    with pytest.raises(pydantic.ValidationError):
        message.channel = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="topic"):
        dagger_nb.Message(channel="news", topic="ai")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "payload", [None, True, 3, 2.5, "text", [1, "a", None], {"nested": {"list": [1, 2]}}], ids=repr
)
def test_message_payload_is_any_json_value(payload: object) -> None:
    assert dagger_nb.Message(channel="c", payload=payload).payload == payload


def test_message_round_trips_through_json() -> None:
    message = dagger_nb.Message(channel="news", source="a_1234abcd", payload=[1, 2], task_id="t1")
    assert dagger_nb.Message.model_validate_json(message.model_dump_json()) == message
