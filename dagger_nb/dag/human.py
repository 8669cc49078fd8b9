"""Questions an action asks a person while its run goes on (``await ctx.ask_human(...)``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from time import time
from typing import Any

import anyio

from dagger_nb.schema import CompiledSchema


@dataclass(slots=True)
class HumanRequest:
    """One open question: what was asked, by which node, and the schema an answer must match."""

    run_id: str
    node: str
    prompt: str
    schema: dict[str, Any] | None
    default: Any
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    asked_at: float = field(default_factory=time)
    compiled: CompiledSchema | None = field(default=None, repr=False)
    answered: anyio.Event = field(default_factory=anyio.Event, repr=False)
    value: Any = None

    def answer(self, value: Any) -> None:
        """Check ``value`` against the schema (raising :class:`SchemaValidationError`) and hand it over."""
        if self.compiled is not None:
            self.compiled.validate(value)
        self.value = value
        self.answered.set()


class PauseForHuman(Exception):
    """Nobody answered in time and ``human_timeout_action`` is ``pause``."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        super().__init__(prompt)
