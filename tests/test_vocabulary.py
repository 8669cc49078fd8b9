"""One vocabulary across the three paradigms: the registry API and the event timestamp type."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import dagger_nb
from dagger_nb.dag.actions import ActionRegistry
from dagger_nb.pubsub import PubSubAgent, PubSubAgentRegistry


@dataclass(frozen=True)
class Kind:
    """How to make one registry and define an entry in it that returns ``marker`` when called."""

    make: Callable[[], Any]
    define: Callable[[Any, str, str], Any]
    unwrap: Callable[[Any], Any]
    redefined: str
    missing: type[KeyError]
    unknown: str


def _returning(marker: str) -> Callable[..., str]:
    return lambda *args, **kwargs: marker


KINDS = {
    "actions": Kind(
        ActionRegistry,
        lambda registry, name, marker: registry.register(name, _returning(marker)),
        lambda action: action.fn(),
        "action 'b' redefined; the new definition replaces the old one",
        dagger_nb.ActionNotFound,
        "unknown action 'z' (registered: a, b)",
    ),
    "task-agents": Kind(
        dagger_nb.TaskAgentRegistry,
        lambda registry, name, marker: registry.register(name, _returning(marker)),
        lambda agent: agent({}, None),
        "task agent 'b' redefined; the new definition replaces the old one",
        dagger_nb.AgentNotFound,
        "unknown agent 'z' (registered: a, b)",
    ),
    "pubsub-agents": Kind(
        PubSubAgentRegistry,
        lambda registry, name, marker: registry.register(PubSubAgent(name, _returning(marker))),
        lambda agent: agent(None, None),
        "pub/sub agent 'b' redefined; the new definition replaces the old one",
        dagger_nb.AgentNotFound,
        "unknown agent 'z' (registered: a, b)",
    ),
}


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_every_registry_has_the_same_api(kind: Kind, caplog: pytest.LogCaptureFixture) -> None:
    registry = kind.make()
    assert len(registry) == 0 and list(registry) == [] and "b" not in registry
    kind.define(registry, "b", "first b")
    kind.define(registry, "a", "a")
    assert list(registry) == ["a", "b"] == registry.names() and len(registry) == 2 and "b" in registry
    with caplog.at_level(logging.INFO, logger="dagger_nb"):
        kind.define(registry, "b", "second b")
    assert [(record.name, record.levelno, record.getMessage()) for record in caplog.records] == [
        ("dagger_nb", logging.INFO, kind.redefined)
    ]
    assert kind.unwrap(registry.get("b")) == "second b" and len(registry) == 2
    with pytest.raises(kind.missing, match=f"^{re.escape(kind.unknown)}$"):
        registry.get("z")
    with pytest.raises(kind.missing, match=f"^{re.escape(kind.unknown)}$"):
        registry.unregister("z")
    registry.unregister("b")
    assert list(registry) == ["a"] and "b" not in registry and len(registry) == 1


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_a_first_definition_logs_nothing(kind: Kind, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="dagger_nb"):
        kind.define(kind.make(), "a", "a")
    assert caplog.records == []


def test_pubsub_registry_add_is_a_deprecated_register() -> None:
    registry = PubSubAgentRegistry()
    agent = PubSubAgent("a", _returning("a"))
    with pytest.warns(DeprecationWarning, match=r"^PubSubAgentRegistry\.add\(\) is deprecated; use "
                                                r"PubSubAgentRegistry\.register\(\)$"):
        assert registry.add(agent) is agent
    assert registry.get("a") is agent


def test_pubsub_registry_remove_is_a_deprecated_unregister() -> None:
    registry = PubSubAgentRegistry()
    registry.register(PubSubAgent("a", _returning("a")))
    with pytest.warns(DeprecationWarning, match=r"^PubSubAgentRegistry\.remove\(\) is deprecated; use "
                                                r"PubSubAgentRegistry\.unregister\(\)$"):
        registry.remove("a")
    assert "a" not in registry
