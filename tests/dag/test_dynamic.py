"""Growing running workflows, supervisor loops and questions to a person."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import pytest

import dagger_nb
from dagger_nb import ActionRegistry, DagExecutor, GraphChangeError, NodeContext, SchemaValidationError
from dagger_nb.dag.events import HumanInputReceived, HumanInputRequested, NodeAdded, NodeSucceeded
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio


@pytest.fixture
def registry() -> ActionRegistry:
    registry = ActionRegistry()
    registry.register("add", lambda a, b: a + b, inline=True)
    registry.register("multiply", lambda x: 2 * x, inline=True)
    return registry


def rust_dynamic_demo() -> dagger_nb.WorkflowSpec:
    return workflow(
        "dynamic",
        {"id": "add_1", "action": "add", "inputs": [{"name": "a", "value": 5}, {"name": "b", "value": 3}]},
        {
            "id": "add_2",
            "action": "add",
            "dependencies": ["add_1"],
            "inputs": [{"name": "a", "value": 10}, {"name": "b", "value": 7}],
        },
    )


def double_big_sums(event: object, run: dagger_nb.RunHandle) -> None:
    if isinstance(event, NodeSucceeded) and event.node.startswith("add") and event.outputs["result"] > 10:
        run.add_node(
            "multiply", id=f"multiply_{event.node}", inputs={"x": f"{event.node}.result"}, dependencies=[event.node]
        )


async def test_hook_grows_the_rust_dynamic_demo(registry: ActionRegistry) -> None:
    executor = executor_with(registry, rust_dynamic_demo())
    executor.add_hook(double_big_sums)
    async with executor:
        handle = executor.start("dynamic")
        report = await handle
        added = [e.node async for e in handle.subscribe() if isinstance(e, NodeAdded)]
    assert report.success
    assert report.cache.get("add_1", "result") == 8
    assert report.cache.get("add_2", "result") == 17
    assert report.cache.get("multiply_add_2", "result") == 34
    assert "multiply_add_1" not in report.outcomes and added == ["multiply_add_2"]
    assert '"add_2" -> "multiply_add_2";' in report.to_dot()


async def test_async_hooks_finish_before_the_run_ends(registry: ActionRegistry) -> None:
    async def slow_hook(event: object, run: dagger_nb.RunHandle) -> None:
        if isinstance(event, NodeSucceeded) and event.node == "add_2":
            await anyio.sleep(0)
            run.add_node("multiply", inputs={"x": "add_2.result"})

    executor = executor_with(registry, rust_dynamic_demo())
    executor.add_hook(slow_hook)
    report = await executor.run("dynamic")
    assert report.cache.get("multiply_1", "result") == 34


async def test_a_failing_hook_is_noted_and_the_run_goes_on(registry: ActionRegistry) -> None:
    def broken(event: object, run: object) -> None:
        raise ValueError("hook bug")

    executor = executor_with(registry, rust_dynamic_demo())
    executor.add_hook(broken)
    report = await executor.run("dynamic")
    assert report.success
    assert (
        report.notes[0] == "hook test_a_failing_hook_is_noted_and_the_run_goes_on.<locals>.broken failed on "
        "NodeStarted: ValueError: hook bug"
    )


async def test_actions_add_nodes_that_start_after_them(registry: ActionRegistry) -> None:
    order: list[str] = []

    @dagger_nb.action(registry=registry)
    async def plan(ctx: NodeContext) -> int:
        order.append("plan")
        first = ctx.add_node("work", inputs={"n": {"value": 1}}, dependencies=[ctx.node])
        ctx.add_node("work", inputs={"n": f"{first}.result"}, outputs=["result"])
        return 0

    @dagger_nb.action(registry=registry)
    async def work(n: int, ctx: NodeContext) -> int:
        order.append(ctx.node)
        return n + 10

    report = await executor_with(registry, workflow("planned", {"id": "plan", "action": "plan"})).run("planned")
    assert report.success and order == ["plan", "work_1", "work_2"]
    assert report.cache.get("work_2", "result") == 21
    assert report.spec.dependencies("work_2") == ["work_1"]


async def test_sync_actions_can_add_nodes_from_their_thread(registry: ActionRegistry) -> None:
    def plan(ctx: NodeContext) -> None:
        ctx.add_nodes([{"action": "multiply", "inputs": {"x": {"value": 4}}}])

    registry.register("plan", plan)
    report = await executor_with(registry, workflow("threaded", {"id": "p", "action": "plan"})).run("threaded")
    assert report.cache.get("multiply_1", "result") == 8


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([{"action": "nope"}], r"unknown action 'nope' \(registered: add, multiply, try_add\)"),
        ([{"action": "add", "id": "start"}], "duplicate node id 'start'"),
        ([{"action": "add", "dependencies": ["ghost"]}], "unknown dependency 'ghost'"),
        (
            [{"action": "add", "id": "x", "dependencies": ["y"]}, {"action": "add", "id": "y", "dependencies": ["x"]}],
            "dependency cycle: x -> y -> x",
        ),
        ([{"action": "add", "inputs": {"a": 3}}], r"input 'a' must be a reference .* or \{'value': \.\.\.\}, got 3"),
        ([{"action": "add", "inputs": {"a": "ghost.out"}}], "references unknown node 'ghost'"),
        (
            [{"action": "add", "id": "a.b"}, {"action": "add", "inputs": {"a": "a.b.out"}}],
            "references unknown node 'a'; node 'a.b' cannot be referenced because its id contains '.': rename it",
        ),
        ([{"action": "add", "speed": 3}], r"unknown argument\(s\) speed"),
        ([{"action": "add", "id": "ok"}, {"action": "nope"}], "unknown action 'nope'"),
    ],
    ids=[
        "action", "duplicate", "dependency", "cycle", "bad-input", "unknown-ref", "dotted-id-ref", "argument", "atomic"
    ],
)
async def test_add_node_errors_reach_the_action_and_add_nothing(
    registry: ActionRegistry, requests: list[dict[str, object]], message: str
) -> None:
    caught: list[Exception] = []

    @dagger_nb.action(registry=registry)
    async def try_add(ctx: NodeContext) -> None:
        with pytest.raises(GraphChangeError, match=message) as error:
            ctx.add_nodes(requests)
        caught.append(error.value)

    report = await executor_with(registry, workflow("bad", {"id": "start", "action": "try_add"})).run("bad")
    assert report.success and len(caught) == 1
    assert list(report.outcomes) == ["start"]  # all or none


async def test_nodes_cannot_be_added_after_the_run(registry: ActionRegistry) -> None:
    executor = executor_with(registry, rust_dynamic_demo())
    async with executor:
        handle = executor.start("dynamic")
        await handle
        with pytest.raises(GraphChangeError, match="is succeeded: nodes can only be added while it runs"):
            handle.add_node("add")


async def test_added_nodes_are_persisted_and_resumed(registry: ActionRegistry, tmp_path: Path) -> None:
    calls = {"flaky": 0}

    def flaky(x: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise RuntimeError("not yet")
        return x + 1

    registry.register("flaky", flaky)

    @dagger_nb.action(registry=registry)
    async def plan(ctx: NodeContext) -> None:
        ctx.add_node("flaky", id="grown", inputs={"x": {"value": 1}}, try_count=1)

    db = tmp_path / "runs.db"
    executor = executor_with(registry, workflow("grow", {"id": "plan", "action": "plan"}), db=db)
    first = await executor.run("grow")
    assert first.status == "paused" and first.outcomes["grown"].status == "failed"
    executor.close()

    restarted = DagExecutor(registry, db=db)
    assert '"plan" -> "grown"' not in restarted.to_dot(first.run_id)  # no edge: no dependency
    assert '"grown" [label="grown' in restarted.to_dot(first.run_id)
    resumed = await restarted.resume(first.run_id)
    assert resumed.status == "succeeded" and resumed.cache.get("grown", "result") == 2
    assert list(resumed.outcomes) == ["plan", "grown"]


async def test_a_run_that_grew_is_recorded_as_it_grows(registry: ActionRegistry, tmp_path: Path) -> None:
    release = anyio.Event()

    async def hold() -> str:
        await release.wait()
        return "held"

    registry.register("hold", hold)

    @dagger_nb.action(registry=registry)
    async def plan(ctx: NodeContext) -> None:
        ctx.add_node("multiply", id="done_early", inputs={"x": {"value": 4}})
        ctx.add_node("hold", id="holding", dependencies=["done_early"])

    db = tmp_path / "runs.db"
    executor = executor_with(registry, workflow("grow", {"id": "plan", "action": "plan"}), db=db)
    handle = executor.start("grow")
    with anyio.fail_after(10):
        while "holding" not in handle.snapshot().outcomes or handle.snapshot().outcomes["holding"].status != "running":
            await anyio.sleep(0.005)
    # What a crash now would leave: a consistent copy of the file as it is.
    crashed = tmp_path / "crashed.db"
    with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(crashed)) as copy:
        source.backup(copy)
    release.set()
    await handle
    executor.close()

    restarted = DagExecutor(registry, db=crashed)
    assert restarted.runs_frame()["status"].tolist() == ["interrupted"]
    registry.register("multiply", lambda x: pytest.fail("a finished grown node ran again"))
    resumed = await restarted.resume(handle.run_id)
    assert resumed.status == "succeeded" and list(resumed.outcomes) == ["plan", "done_early", "holding"]
    assert resumed.cache.get("done_early", "result") == 8 and resumed.cache.get("holding", "result") == "held"
    restarted.close()


# -- supervisor loops ---------------------------------------------------------------------------------


def supervisor_registry(executions: list[str]) -> ActionRegistry:
    registry = ActionRegistry()

    @dagger_nb.action(registry=registry)
    async def supervisor_step(iteration: int, ctx: NodeContext) -> str:
        executions.append(f"{ctx.node}(iteration={iteration})")
        if iteration == 0:
            tools = ctx.add_nodes([{"action": "tool", "id": "search"}, {"action": "tool", "id": "fetch"}])
            ctx.add_node("supervisor_step", dependencies=tools)
        elif iteration == 1:
            ctx.add_node("tool", id="review", dependencies=[ctx.node])
            ctx.add_node("supervisor_step", dependencies=["review"])
        return f"step {iteration}"

    @dagger_nb.action(registry=registry)
    async def tool(ctx: NodeContext) -> str:
        executions.append(ctx.node)
        return ctx.node

    return registry


async def test_supervisor_loop_runs_steps_and_tools_in_dependency_order() -> None:
    executions: list[str] = []
    executor = DagExecutor(supervisor_registry(executions))
    report = await executor.run_agent_dag("research the market")
    assert report.success and report.workflow == "research the market"
    assert len(executions) == 6
    assert executions[0] == "supervisor_step_1(iteration=0)"
    assert sorted(executions[1:3]) == ["fetch", "search"]
    assert executions[3:] == ["supervisor_step_2(iteration=1)", "review", "supervisor_step_3(iteration=2)"]


async def test_max_iterations_counts_supervisor_steps_not_nodes() -> None:
    executions: list[str] = []
    executor = DagExecutor(supervisor_registry(executions), config=dagger_nb.DagConfig(max_iterations=2))
    report = await executor.run_agent_dag("too long")
    assert report.status == "failed" and report.error == "Maximum iterations (2) reached"
    assert "supervisor_step_3(iteration=2)" not in executions
    assert report.outcomes["supervisor_step_3"].status == "pending"


async def test_iteration_limit_can_pause_for_a_person_and_resume() -> None:
    executions: list[str] = []
    config = dagger_nb.DagConfig(max_iterations=2, human_timeout_action="pause")
    executor = DagExecutor(supervisor_registry(executions), config=config)
    report = await executor.run_agent_dag("needs a decision")
    assert report.status == "paused" and report.error == "Maximum iterations (2) reached"
    resumed = await executor.resume(report.run_id)
    assert resumed.success and executions[-1] == "supervisor_step_3(iteration=2)"


async def test_agent_dag_needs_a_supervisor_step_action() -> None:
    with pytest.raises(
        dagger_nb.ExecutionError, match="needs an action named 'supervisor_step' \\(registered: none\\)"
    ):
        await DagExecutor(ActionRegistry()).run_agent_dag("anything")


def test_run_agent_dag_from_a_script() -> None:
    executions: list[str] = []
    assert DagExecutor(supervisor_registry(executions)).run_agent_dag_sync("scripted").success
    assert len(executions) == 6


# -- questions to a person ----------------------------------------------------------------------------


def asking_registry(**ask: object) -> ActionRegistry:
    registry = ActionRegistry()

    @dagger_nb.action(registry=registry)
    async def approve(ctx: NodeContext) -> object:
        return await ctx.ask_human("Ship it?", **ask)

    registry.register("other", lambda: "done", inline=True)
    return registry


async def answer_when_asked(handle: dagger_nb.RunHandle, *answers: object) -> list[str]:
    """Answer the first question with each of ``answers`` in turn; returns the refusals."""
    refusals: list[str] = []
    async for event in handle.subscribe():
        if isinstance(event, HumanInputRequested):
            assert [q.request_id for q in handle.questions()] == [event.request_id]
            for answer in answers:
                try:
                    handle.respond(event.request_id, answer)
                except SchemaValidationError as refused:
                    refusals.append(str(refused))
            return refusals
    return refusals


async def test_an_answer_in_time_is_returned_while_other_nodes_go_on() -> None:
    executor = executor_with(
        asking_registry(), workflow("ask", {"id": "q", "action": "approve"}, {"id": "o", "action": "other"})
    )
    async with executor:
        handle = executor.start("ask")
        await answer_when_asked(handle, "yes")
        report = await handle
    assert report.cache.get("q", "result") == "yes" and report.outcomes["o"].status == "succeeded"
    received = [e async for e in handle.subscribe() if isinstance(e, HumanInputReceived)]
    assert [(e.value, e.timed_out) for e in received] == [("yes", False)]


async def test_an_invalid_answer_is_refused_and_the_question_stays_open() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    executor = executor_with(asking_registry(schema=schema), workflow("ask", {"id": "q", "action": "approve"}))
    async with executor:
        handle = executor.start("ask")
        refusals = await answer_when_asked(handle, {"ok": "maybe"}, {"ok": True})
        report = await handle
    assert refusals == ["answer to 'Ship it?': invalid payload at '$.ok': 'maybe' is not of type 'boolean'"]
    assert report.cache.get("q", "ok") is True  # a mapping result stores its keys


async def test_unknown_question_ids_are_refused() -> None:
    executor = executor_with(asking_registry(), workflow("ask", {"id": "q", "action": "approve"}))
    async with executor:
        handle = executor.start("ask")
        with pytest.raises(dagger_nb.ExecutionError, match="has no open question 'nope' \\(open: none\\)"):
            handle.respond("nope", 1)
        await answer_when_asked(handle, "fine")
        await handle


async def test_timeout_on_autopilot_returns_the_default() -> None:
    executor = executor_with(
        asking_registry(timeout=0.01, default="auto-approved"), workflow("ask", {"id": "q", "action": "approve"})
    )
    report = await executor.run("ask")
    assert report.cache.get("q", "result") == "auto-approved"


async def test_timeout_with_pause_pauses_and_asks_again_on_resume() -> None:
    executor = executor_with(
        asking_registry(timeout=0.01),
        workflow("ask", {"id": "q", "action": "approve"}, {"id": "o", "action": "other"}, human_timeout_action="pause"),
    )
    report = await executor.run("ask")
    assert report.status == "paused" and report.error == "waiting for a person to answer: Ship it?"
    assert report.outcomes["q"].status == "pending" and report.outcomes["o"].status == "succeeded"

    executor.registry.register("approve", _patient_approver)
    async with executor:
        handle = executor.start_resume(report.run_id)
        await answer_when_asked(handle, "approved after all")
        resumed = await handle
    assert resumed.success and resumed.cache.get("q", "result") == "approved after all"


async def _patient_approver(ctx: NodeContext) -> object:
    return await ctx.ask_human("Ship it?")


async def test_a_node_added_on_success_waits_for_all_its_dependencies(registry: ActionRegistry) -> None:
    b_may_finish = anyio.Event()
    trace: list[str] = []

    @dagger_nb.action(registry=registry)
    async def step(ctx: NodeContext) -> None:
        trace.append(f"start {ctx.node}")
        if ctx.node == "b":
            await b_may_finish.wait()
        trace.append(f"end {ctx.node}")

    def add_join(event: object, run: dagger_nb.RunHandle) -> None:
        if isinstance(event, NodeSucceeded) and event.node == "a":
            run.add_node("step", id="x", dependencies=["a", "b"])
            b_may_finish.set()

    executor = executor_with(
        registry, workflow("join", {"id": "a", "action": "step"}, {"id": "b", "action": "step"}, max_parallel_nodes=3)
    )
    executor.add_hook(add_join)
    report = await executor.run("join")
    assert report.success
    assert trace.index("start x") > trace.index("end b")
