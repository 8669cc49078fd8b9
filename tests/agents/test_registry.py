"""Task agents: the decorator, the registry and schema compilation."""

from __future__ import annotations

import pytest

import dagger_nb


def test_decorator_registers_under_name_with_description(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="summarise", description="Summarise a text", registry=registry)
    async def summarise(input: dict, ctx: dagger_nb.TaskContext) -> dict:
        return {}

    agent = registry.get("summarise")
    assert registry.names() == ["summarise"]
    assert agent.description == "Summarise a text"
    assert agent.is_async
    assert "summarise" in registry


def test_name_and_description_default_to_function(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(registry=registry)
    def tidy(input: dict, ctx: object) -> dict:
        """Tidy the input."""
        return input

    assert registry.get("tidy").description == "Tidy the input."
    assert not registry.get("tidy").is_async
    assert tidy({"a": 1}, None) == {"a": 1}


def test_registering_a_name_again_replaces_the_agent(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("echo", lambda input, ctx: input)
    registry.register("echo", lambda input, ctx: {"replaced": True})
    assert registry.get("echo")({}, None) == {"replaced": True} and registry.names() == ["echo"]


@pytest.mark.parametrize("replace", [True, False])
def test_replace_is_deprecated(registry: dagger_nb.TaskAgentRegistry, replace: bool) -> None:
    with pytest.warns(DeprecationWarning, match=r"^replace= is deprecated; registering a task agent again always"):
        registry.register("echo", lambda input, ctx: {"first": True}, replace=replace)
    with pytest.warns(DeprecationWarning, match=r"^replace= is deprecated"):

        @dagger_nb.task_agent(name="echo", registry=registry, replace=replace)
        def echo(input: dict, ctx: object) -> dict:
            return {"second": True}

    assert registry.get("echo")({}, None) == {"second": True}


def test_unknown_agent_lists_registered_ones(registry: dagger_nb.TaskAgentRegistry) -> None:
    registry.register("b", lambda input, ctx: input)
    registry.register("a", lambda input, ctx: input)
    with pytest.raises(dagger_nb.AgentNotFound, match=r"unknown agent 'c' \(registered: a, b\)"):
        registry.get("c")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        pytest.param({"type": "nope"}, "agent 'bad' input schema: invalid JSON Schema", id="dict"),
        pytest.param("{not json", "agent 'bad' input schema: schema is not valid JSON", id="json-text"),
    ],
)
def test_invalid_schema_fails_at_decoration(
    registry: dagger_nb.TaskAgentRegistry, schema: object, message: str
) -> None:
    with pytest.raises(dagger_nb.InvalidSchemaError, match=message):

        @dagger_nb.task_agent(name="bad", input_schema=schema, registry=registry)
        async def bad(input: dict, ctx: object) -> dict:
            return {}

    assert "bad" not in registry


def test_schema_given_as_json_text(registry: dagger_nb.TaskAgentRegistry) -> None:
    @dagger_nb.task_agent(name="typed", output_schema='{"type": "object"}', registry=registry)
    async def typed(input: dict, ctx: object) -> dict:
        return {}

    assert registry.get("typed").output_schema is not None


def test_default_registry_is_used_without_one() -> None:
    name = "test_registry_default_agent"

    @dagger_nb.task_agent(name=name)
    async def agent(input: dict, ctx: object) -> dict:
        return {}

    try:
        assert dagger_nb.default_agent_registry.get(name) is agent
    finally:
        dagger_nb.default_agent_registry.unregister(name)
