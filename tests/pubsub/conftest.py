"""Fixtures for the pub/sub tests: an isolated agent registry and a recording agent factory."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

import dagger_nb
from dagger_nb.pubsub import PubSubAgent, PubSubAgentRegistry


@pytest.fixture
def registry() -> PubSubAgentRegistry:
    """A fresh registry, so no test touches the module-level default."""
    return PubSubAgentRegistry()


@dataclass
class Recorder:
    """An agent that records every message it is handed."""

    agent: PubSubAgent
    messages: list[Any] = field(default_factory=list)

    @property
    def payloads(self) -> list[Any]:
        return [message.payload for message in self.messages]


@pytest.fixture
def recorder(registry: PubSubAgentRegistry) -> Callable[..., Recorder]:
    """``recorder(name, subscribe=[...], ...)`` defines an agent that records what it receives."""

    def make(name: str, *, subscribe: Iterable[str], **options: Any) -> Recorder:
        received: list[Any] = []

        async def handler(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
            received.append(message)

        agent = dagger_nb.pubsub_agent(name, subscribe=subscribe, registry=registry, **options)(handler)
        return Recorder(agent, received)

    return make
