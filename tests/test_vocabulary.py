"""One vocabulary across the three paradigms: the registry API, the event timestamp type, the root exports."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import logging
import re
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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


EVENT_UNIONS = {"dag": dagger_nb.DagEvent, "jobs": dagger_nb.JobEvent, "pubsub": dagger_nb.PubSubEvent}


@pytest.mark.parametrize("union", EVENT_UNIONS.values(), ids=EVENT_UNIONS.keys())
def test_every_event_declares_a_float_timestamp(union: Any) -> None:
    kinds = typing.get_args(union)
    assert len(kinds) >= 9
    declared = {kind.__name__: {f.name: f.type for f in dataclasses.fields(kind)}["timestamp"] for kind in kinds}
    assert declared == {kind.__name__: "float" for kind in kinds}  # the modules' annotations are strings


async def _dag_events() -> list[Any]:
    registry = ActionRegistry()
    registry.register("one", lambda: 1)
    executor = dagger_nb.DagExecutor(registry=registry)
    executor.add_workflow(dagger_nb.WorkflowSpec(name="w", nodes=[dagger_nb.NodeSpec(id="a", action="one")]))
    handle = executor.start("w")
    await handle
    return [event async for event in handle.subscribe()]


async def _job_events() -> list[Any]:
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("echo", lambda input, ctx: input)
    async with dagger_nb.TaskManager(registry=registry, heartbeat_interval=None) as manager:
        manager.add_task("job", "one", "echo", {"a": 1}, task_id="one")
        handle = manager.start("job")
        await handle
        return [event async for event in handle.subscribe()]


async def _pubsub_events() -> list[Any]:
    registry = PubSubAgentRegistry()
    registry.register(PubSubAgent("echo", _returning("echo"), subscribe="news"))
    bus = dagger_nb.PubSub(registry=registry)
    events: list[Any] = []
    bus.events.add_listener(events.append)
    bus.register("echo")
    await bus.publish("news", "text")
    await bus.run(until_idle=True)
    return events


@pytest.mark.anyio
@pytest.mark.parametrize("collect", [_dag_events, _job_events, _pubsub_events], ids=["dag", "jobs", "pubsub"])
async def test_events_carry_epoch_seconds_in_every_paradigm(collect: Callable[[], Any]) -> None:
    before = time.time()
    events = await collect()
    after = time.time()
    assert len(events) >= 3
    assert all(type(event.timestamp) is float and before <= event.timestamp <= after for event in events)


def _type_checking_names() -> set[str]:
    tree = ast.parse(Path(dagger_nb.__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.name for node in block.body if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("dagger_nb") for alias in node.names}  # typing's names are not exports


def test_the_root_lists_agree() -> None:
    """``__all__``, the lazy ``_EXPORTS`` and the TYPE_CHECKING imports name the same things."""
    assert set(dagger_nb.__all__) == set(dagger_nb._EXPORTS) == _type_checking_names()


SHARED_NAMES = {
    "DagEvent": "dagger_nb.dag.events",
    "JobEvent": "dagger_nb.agents.events",
    "PubSubEvent": "dagger_nb.pubsub.events",
    "Handle": "dagger_nb.handles",
    "NoRunningLoop": "dagger_nb.errors",
    "RunStatus": "dagger_nb.dag.report",
    "PubSubStatus": "dagger_nb.pubsub.report",
    "PubSubReport": "dagger_nb.pubsub.report",
}


@pytest.mark.parametrize(("name", "module"), SHARED_NAMES.items(), ids=SHARED_NAMES.keys())
def test_the_shared_vocabulary_is_exported_from_the_root(name: str, module: str) -> None:
    assert name in dagger_nb.__all__
    assert getattr(dagger_nb, name) is getattr(importlib.import_module(module), name)
