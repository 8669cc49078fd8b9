"""The action registry and the @action decorator."""

from __future__ import annotations

import pytest

import dagger_nb
from dagger_nb import ActionRegistry


def test_register_get_names_and_contains() -> None:
    registry = ActionRegistry()
    registry.register("b", lambda: 1)
    registry.register("a", lambda: 2)
    assert registry.names() == ["a", "b"] and "a" in registry and "zzz" not in registry and len(registry) == 2
    assert registry.get("a").fn() == 2


def test_registering_again_replaces() -> None:
    registry = ActionRegistry()
    registry.register("step", lambda: "old")
    registry.register("step", lambda: "new")
    assert registry.get("step").fn() == "new"


def test_unknown_action_lists_the_registered_ones() -> None:
    registry = ActionRegistry()
    registry.register("load", lambda: 1)
    with pytest.raises(dagger_nb.ActionNotFound, match=r"^unknown action 'fit' \(registered: load\)$"):
        registry.get("fit")
    with pytest.raises(KeyError):  # also a KeyError, for code that expects one
        registry.unregister("fit")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_action_names_must_be_text(bad: object) -> None:
    with pytest.raises(dagger_nb.DaggerError, match="action name must be a non-empty string"):
        ActionRegistry().register(bad, lambda: 1)  # type: ignore[arg-type]


def test_non_callables_are_refused() -> None:
    with pytest.raises(dagger_nb.DaggerError, match="action 'x' must be callable, got int"):
        ActionRegistry().register("x", 3)  # type: ignore[arg-type]


def test_decorator_forms() -> None:
    registry = ActionRegistry()

    @dagger_nb.action(registry=registry)
    def plain() -> None: ...

    @dagger_nb.action("named", registry=registry)
    async def other() -> None: ...

    @dagger_nb.action(name="keyword", registry=registry, inline=True)
    def third() -> None: ...

    assert registry.names() == ["keyword", "named", "plain"]
    assert registry.get("named").is_async and registry.get("keyword").inline
    assert plain() is None  # the function itself is returned unchanged


def test_bare_decorator_uses_the_default_registry() -> None:
    @dagger_nb.action
    def default_registry_probe() -> int:
        return 1

    try:
        assert "default_registry_probe" in dagger_nb.default_registry
    finally:
        dagger_nb.default_registry.unregister("default_registry_probe")


def test_signature_is_inspected_once() -> None:
    async def act(x: int, ctx: object) -> None: ...

    action = dagger_nb.dag.actions.Action.wrap("act", act)
    assert action.takes_ctx and action.is_async and action.parameters == {"x", "ctx"}
    assert not action.takes_any_keyword


# -- what a node stores ------------------------------------------------------------------------------

pytest_anyio = pytest.mark.anyio


@pytest_anyio
async def test_a_value_the_action_wrote_itself_is_not_overwritten_by_its_return_value() -> None:
    from dagger_nb.cache import insert_value
    from tests.dag.helpers import executor_with, workflow

    registry = ActionRegistry()

    def rust_style(ctx):  # as the ports of the Rust examples write it
        insert_value(ctx.cache, ctx.node, "output", "written")
        ctx.output("other", 7)
        return {"output": "returned", "extra": 1}

    registry.register("rust_style", rust_style)
    registry.register("show", lambda value: f"got {value}")
    spec = workflow(
        "ported",
        {"id": "r", "action": "rust_style"},
        {"id": "s", "action": "show", "inputs": [{"name": "value", "reference": "r.output"}]},
    )
    with pytest.warns(dagger_nb.DaggerWarning, match=r"node 'r': the action wrote 'output' to the cache itself"):
        report = await executor_with(registry, spec).run("ported")
    assert report.cache.get("r", "output") == "written"
    assert report.cache.get("r", "other") == 7 and report.cache.get("r", "extra") == 1
    assert report.cache.get("s", "result") == "got written"
    assert any("the value it wrote is kept" in note for note in report.outcomes["r"].notes)


@pytest_anyio
async def test_a_missing_reference_says_what_the_node_did_produce() -> None:
    from tests.dag.helpers import executor_with, workflow

    registry = ActionRegistry()
    registry.register("cfg", lambda: {"rate": 0.1, "size": 3})
    registry.register("use", lambda value: value)
    spec = workflow(
        "cfg",
        {"id": "cfg", "action": "cfg"},
        {"id": "u", "action": "use", "inputs": [{"name": "value", "reference": "cfg.rates"}]},
        on_failure="continue",
    )
    report = await executor_with(registry, spec).run("cfg")
    assert report.cache.get("cfg", "result") == {"rate": 0.1, "size": 3}
    assert report.outcomes["u"].error == (
        "Failed after 1 attempt. Last error: input 'value' references 'cfg.rates', which node 'cfg' did not "
        "produce (it produced: rate, result, size)"
    )
