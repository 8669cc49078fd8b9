"""The message that travels over a pub/sub channel.

>>> message = Message(source="user", channel="news", payload={"topic": "ai"})
>>> message.channel, message.payload, message.task_id
('news', {'topic': 'ai'}, None)
>>> len(message.message_id), message.timestamp.tzname()
(36, 'UTC')
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from dagger_nb.errors import SchemaValidationError

_JSON_VALUE: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def json_value(value: Any) -> Any:
    """``value`` itself if it is a JSON value (dicts with text keys, lists, text, numbers, bools, None)."""
    _JSON_VALUE.validate_python(value)
    return value


def new_message_id() -> str:
    """A fresh uuid4, as text."""
    return str(uuid.uuid4())


def not_json_error(error: ValidationError, channel: str) -> SchemaValidationError:
    """Say where in the payload pydantic found something that is not JSON, as ``$.a[1].b``."""
    location = list(error.errors()[0]["loc"][1:])
    problem = "not a JSON value"
    if location and location[-1] == "[key]":
        location.pop()
        problem = f"object key {location.pop()!r} is not text"
    path = "$"
    for part in location:
        if part not in ("dict", "list"):
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return SchemaValidationError(problem, where=f"channel '{channel}'", path=path)


class Message(BaseModel):
    """One published payload: who sent it, where, when, and what.

    Messages are immutable and shared by every subscriber of the channel, so
    handlers must treat ``payload`` as read-only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: str = Field(default_factory=new_message_id)
    timestamp: datetime = Field(default_factory=utc_now)
    source: str = "user"
    channel: str
    payload: Annotated[Any, AfterValidator(json_value)] = None
    task_id: str | None = None
