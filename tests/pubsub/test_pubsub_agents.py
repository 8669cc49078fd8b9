"""Agent definitions: the decorator, the registry, the context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dagger_nb
from dagger_nb.pubsub import PubSubAgent, PubSubAgentRegistry


@pytest.fixture
def clean_default_registry() -> Iterator[PubSubAgentRegistry]:
    registry = dagger_nb.default_pubsub_registry
    before = {name: registry.get(name) for name in registry.names()}
    yield registry
    registry.clear()
    for agent in before.values():
        registry.register(agent)


def test_decorator_defines_an_agent_in_the_given_registry(registry: PubSubAgentRegistry) -> None:
    @dagger_nb.pubsub_agent(
        "echo",
        subscribe=["in", "in2"],
        publish=["out"],
        input_schema={"type": "object"},
        output_schema='{"type": "string"}',
        description="repeats",
        registry=registry,
    )
    async def echo(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        """Docstring."""

    assert isinstance(echo, PubSubAgent)
    assert registry.names() == ["echo"]
    assert registry.get("echo") is echo
    assert "echo" in registry and len(registry) == 1
    assert echo.subscribe == ("in", "in2")
    assert echo.publish == ("out",)
    assert echo.description == "repeats"
    assert echo.is_async
    assert echo.input_schema is not None and echo.input_schema.is_valid({})
    assert echo.output_schema is not None and not echo.output_schema.is_valid(1)
    assert echo.__name__ == "echo" and echo.__doc__ == "Docstring."
    assert "echo" not in dagger_nb.default_pubsub_registry


def test_registry_none_means_the_module_default(clean_default_registry: PubSubAgentRegistry) -> None:
    @dagger_nb.pubsub_agent("default_one", subscribe="news")
    def handler(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        pass

    assert clean_default_registry.get("default_one") is handler
    assert handler.subscribe == ("news",)
    assert not handler.is_async


def test_bare_decorator_and_missing_name_use_the_function_name(registry: PubSubAgentRegistry) -> None:
    @dagger_nb.pubsub_agent(subscribe=["a"], registry=registry)
    async def watcher(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        """Watches a."""

    assert watcher.name == "watcher"
    assert watcher.description == "Watches a."


def test_bare_decorator_goes_to_the_default_registry(clean_default_registry: PubSubAgentRegistry) -> None:
    @dagger_nb.pubsub_agent
    async def bare(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        pass

    assert clean_default_registry.get("bare") is bare
    assert bare.subscribe == ()


def test_defining_a_name_again_replaces_it(registry: PubSubAgentRegistry) -> None:
    first = dagger_nb.pubsub_agent("a", registry=registry)(lambda message, ctx: None)
    second = dagger_nb.pubsub_agent("a", registry=registry)(lambda message, ctx: None)
    assert registry.get("a") is second is not first
    assert list(registry) == ["a"]


def test_calling_the_agent_calls_its_handler(registry: PubSubAgentRegistry) -> None:
    agent = dagger_nb.pubsub_agent("double", registry=registry)(lambda message, ctx: message.payload * 2)
    assert agent(dagger_nb.Message(channel="c", payload=21), None) == 42  # type: ignore[arg-type]


def test_invalid_schema_fails_at_definition(registry: PubSubAgentRegistry) -> None:
    with pytest.raises(dagger_nb.InvalidSchemaError, match=r"^agent 'bad' input: invalid JSON Schema"):
        dagger_nb.pubsub_agent("bad", input_schema={"type": "no-such-type"}, registry=registry)(
            lambda message, ctx: None
        )
    with pytest.raises(dagger_nb.InvalidSchemaError, match=r"^agent 'bad' output: schema is not valid JSON"):
        dagger_nb.pubsub_agent("bad", output_schema="{not json", registry=registry)(lambda message, ctx: None)
    assert "bad" not in registry


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("", {}, "a pub/sub agent needs a non-empty name, got ''"),
        (
            "x",
            {"subscribe": ["ok", ""]},
            "pub/sub agent 'x' subscribe: channel names must be non-empty strings, got ''",
        ),
        ("x", {"publish": [3]}, "pub/sub agent 'x' publish: channel names must be non-empty strings, got 3"),
    ],
    ids=["empty-name", "empty-channel", "non-string-channel"],
)
def test_bad_definitions_raise_pubsub_error(
    registry: PubSubAgentRegistry, name: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(dagger_nb.PubSubError) as caught:
        dagger_nb.pubsub_agent(name, registry=registry, **options)(lambda message, ctx: None)  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_handler_must_be_callable() -> None:
    with pytest.raises(
        dagger_nb.PubSubError, match=r"^pub/sub agent 'x': handler must be callable, got int$"
    ):
        PubSubAgent("x", 3)  # type: ignore[arg-type]


def test_unknown_agent_names_the_defined_ones(registry: PubSubAgentRegistry) -> None:
    dagger_nb.pubsub_agent("b", registry=registry)(lambda message, ctx: None)
    dagger_nb.pubsub_agent("a", registry=registry)(lambda message, ctx: None)
    with pytest.raises(dagger_nb.AgentNotFound, match=r"^unknown agent 'c' \(registered: a, b\)$"):
        registry.get("c")
    registry.unregister("a")
    assert registry.names() == ["b"]
    with pytest.raises(dagger_nb.AgentNotFound):
        registry.unregister("a")


def test_duplicate_channels_are_kept_once(registry: PubSubAgentRegistry) -> None:
    agent = dagger_nb.pubsub_agent("d", subscribe=["a", "b", "a"], registry=registry)(lambda m, c: None)
    assert agent.subscribe == ("a", "b")
