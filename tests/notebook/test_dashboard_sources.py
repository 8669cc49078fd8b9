"""The notebook layer reads the core only through public names; the few it needed are tested here."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import anyio
import pytest

import dagger_nb.notebook

pytestmark = pytest.mark.anyio

NOTEBOOK = Path(dagger_nb.notebook.__file__).parent


def private_reads(source: str) -> list[str]:
    """``obj._name`` and ``getattr(obj, "_name")`` where ``obj`` is not ``self``, ``cls`` or ``super()``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and str(node.args[1].value).startswith("_")):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("self._a + cls._b + super()._c()", []),
        ("manager._iter_tasks(job)", ["line 1: manager._iter_tasks"]),
        ("getattr(handle, '_run', None)", ["line 1: getattr(handle, '_run', None)"]),
        ("x.__class__", []),
    ],
    ids=["own", "other", "getattr", "dunder"],
)
def test_private_reads_finds_what_it_should(source: str, expected: list[str]) -> None:
    assert private_reads(source) == expected


@pytest.mark.parametrize("path", sorted(NOTEBOOK.rglob("*.py")), ids=lambda path: path.name)
def test_the_notebook_layer_reads_no_private_attribute_of_another_object(path: Path) -> None:
    assert private_reads(path.read_text(encoding="utf-8")) == []


async def test_a_bus_hands_out_its_background_delivery_and_the_monitor_follows_it() -> None:
    from dagger_nb.notebook import PubSubMonitor
    from dagger_nb.pubsub import PubSub, PubSubAgentRegistry, pubsub_agent

    registry = PubSubAgentRegistry()

    @pubsub_agent("reader", subscribe=["words"], registry=registry)
    async def reader(message: Any, ctx: Any) -> None:
        pass

    bus = PubSub(registry=registry)
    bus.register("reader")
    assert bus.handle is None
    handle = bus.start()
    assert bus.handle is handle
    monitor = PubSubMonitor(bus)  # no handle= given: the bus's own
    assert monitor.handle is handle and monitor.running
    bus.stop()
    await handle.wait()
    monitor.refresh()
    assert not monitor.running
    monitor.close()
    bus.close()


async def test_iter_tasks_reads_the_managers_own_records() -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager

    registry = TaskAgentRegistry()
    registry.register("someone", lambda input, ctx: {})
    with TaskManager(registry=registry) as manager:
        first = manager.add_objective("a", "first", "someone")
        other = manager.add_objective("b", "other job", "someone")
        records = list(manager.iter_tasks("a"))
        assert [record.task_id for record in records] == [first]
        assert records[0] is next(iter(manager.iter_tasks("a")))  # no copy
        assert manager.tasks("a")[0] is not records[0]  # tasks() copies
        assert [record.task_id for record in manager.iter_tasks()] == [first, other]


async def test_running_usage_is_what_the_running_attempt_reported_so_far() -> None:
    from dagger_nb.agents import TaskAgentRegistry, TaskManager

    registry = TaskAgentRegistry()
    reported = anyio.Event()
    gate = anyio.Event()

    async def work(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ctx.record_usage(tokens=7, cost=0.5, model="m")
        reported.set()
        await gate.wait()
        return {}

    registry.register("work", work)
    async with TaskManager(registry=registry) as manager:
        task_id = manager.add_objective("j", "one step", "work")
        handle = manager.start("j")
        await reported.wait()
        usage = handle.running_usage(task_id)
        assert usage is not None and (usage.tokens, usage.cost, usage.models) == (7, 0.5, ["m"])
        assert handle.running_usage("no-such-task") is None
        gate.set()
        await handle.wait()
        assert handle.running_usage(task_id) is None  # the attempt ended: its usage is the task's now
        assert manager.get_task(task_id).tokens == 7  # type: ignore[union-attr]
