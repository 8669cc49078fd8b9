"""DAG executor semantics: ordering, parallelism, outputs, retries, timeouts, failure policies."""

from __future__ import annotations

import threading

import anyio
import pandas as pd
import pytest

import dagger_nb
from dagger_nb import ActionRegistry, Cache, DagExecutor, ExecutionError, WorkflowNotFound
from tests.dag.helpers import executor_with, workflow

pytestmark = pytest.mark.anyio


@pytest.fixture
def registry() -> ActionRegistry:
    return ActionRegistry()


async def test_chain_passes_outputs_along_in_dependency_order(registry: ActionRegistry) -> None:
    order: list[str] = []

    @dagger_nb.action(registry=registry)
    async def add(a: int, b: int, ctx: dagger_nb.NodeContext) -> int:
        order.append(ctx.node)
        return a + b

    spec = workflow(
        "chain",
        {
            "id": "one",
            "action": "add",
            "outputs": [{"name": "sum"}],
            "inputs": [{"name": "a", "reference": "inputs.x"}, {"name": "b", "value": 1}],
        },
        {
            "id": "two",
            "action": "add",
            "outputs": [{"name": "sum"}],
            "inputs": [{"name": "a", "reference": "one.sum"}, {"name": "b", "value": 10}],
        },
        {
            "id": "three",
            "action": "add",
            "inputs": [{"name": "a", "reference": "two.sum"}, {"name": "b", "reference": "one.sum"}],
        },
    )
    report = await executor_with(registry, spec).run("chain", inputs={"x": 5})
    assert report.status == "succeeded" and report.success and report.error is None
    assert order == ["one", "two", "three"]
    assert report.cache.get("three", "result") == 16 + 6
    assert {o.status for o in report.outcomes.values()} == {"succeeded"}
    assert all(o.attempts == 1 for o in report.outcomes.values())


async def test_diamond_runs_each_node_once_and_joins_after_both_branches(registry: ActionRegistry) -> None:
    calls: list[str] = []
    both_branches_started = anyio.Event()
    started = set()

    @dagger_nb.action(registry=registry)
    async def step(ctx: dagger_nb.NodeContext) -> str:
        calls.append(ctx.node)
        if ctx.node in ("left", "right"):
            started.add(ctx.node)
            if len(started) == 2:
                both_branches_started.set()
            with anyio.fail_after(5):  # proves the branches overlap, else it would hang
                await both_branches_started.wait()
        return ctx.node

    spec = workflow(
        "diamond",
        {"id": "top", "action": "step"},
        {"id": "left", "action": "step", "dependencies": ["top"]},
        {"id": "right", "action": "step", "dependencies": ["top"]},
        {"id": "bottom", "action": "step", "dependencies": ["left", "right"]},
        max_parallel_nodes=2,
    )
    report = await executor_with(registry, spec).run("diamond")
    assert report.success
    assert sorted(calls) == ["bottom", "left", "right", "top"]
    assert calls[0] == "top" and calls[-1] == "bottom"


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_never_more_than_max_parallel_nodes_at_once(registry: ActionRegistry, limit: int) -> None:
    running = 0
    peak = 0

    @dagger_nb.action(registry=registry)
    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(5):
            await anyio.sleep(0)
        running -= 1

    spec = workflow("wide", *({"id": f"n{i}", "action": "work"} for i in range(12)), max_parallel_nodes=limit)
    report = await executor_with(registry, spec).run("wide")
    assert report.success
    assert peak == limit


async def test_parallel_execution_disabled_runs_one_node_at_a_time(registry: ActionRegistry) -> None:
    running = peak = 0

    @dagger_nb.action(registry=registry)
    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0)
        running -= 1

    spec = workflow(
        "serial",
        *({"id": f"n{i}", "action": "work"} for i in range(4)),
        enable_parallel_execution=False,
        max_parallel_nodes=4,
    )
    assert (await executor_with(registry, spec).run("serial")).success
    assert peak == 1


# -- outputs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "returned", "expected"),
    [
        ([{"name": "total"}], 42, {"total": 42}),
        ([{"name": "total"}], {"a": 1}, {"total": {"a": 1}}),
        ([{"name": "x"}, {"name": "y"}], {"x": 1, "y": 2, "z": 3}, {"x": 1, "y": 2, "z": 3}),
        ([], {"k": "v"}, {"k": "v", "result": {"k": "v"}}),
        ([], {"result": 1, "k": "v"}, {"result": 1, "k": "v"}),
        ([], 7, {"result": 7}),
        ([], None, {}),
    ],
    ids=["one-output", "one-output-mapping", "several", "none-mapping", "none-mapping-with-result", "none-scalar",
             "none-none"],
)
async def test_return_value_is_stored_by_declared_outputs(
    registry: ActionRegistry, outputs: list[dict[str, str]], returned: object, expected: dict[str, object]
) -> None:
    registry.register("produce", lambda: returned, inline=True)
    spec = workflow("out", {"id": "p", "action": "produce", "outputs": outputs})
    report = await executor_with(registry, spec).run("out")
    assert report.success
    assert report.cache.namespace("p") == expected


async def test_missing_declared_output_fails_the_node_naming_it(registry: ActionRegistry) -> None:
    registry.register("produce", lambda: {"x": 1}, inline=True)
    spec = workflow(
        "out",
        {"id": "p", "action": "produce", "outputs": [{"name": "x"}, {"name": "y"}], "onfailure": False},
        on_failure="stop",
    )
    report = await executor_with(registry, spec).run("out")
    assert report.status == "failed"
    assert report.outcomes["p"].error == (
        "Failed after 1 attempt. Last error: action result is missing declared output(s): y (it holds: x)"
    )


async def test_rust_style_action_writes_the_cache_itself(registry: ActionRegistry) -> None:
    async def add(num1: float, num2: float, ctx: dagger_nb.NodeContext) -> None:
        dagger_nb.insert_value(ctx.cache, ctx.node, "sum", num1 + num2)

    async def square(ctx: dagger_nb.NodeContext) -> None:
        value = dagger_nb.parse_input_from_name(ctx.cache, "x", ctx.executor.workflow("rust").node(ctx.node).inputs)
        ctx.output("squared", value * value)

    registry.register("add", add)
    registry.register("square", square)
    spec = workflow(
        "rust",
        {
            "id": "a",
            "action": "add",
            "outputs": [{"name": "sum"}],
            "inputs": [{"name": "num1", "reference": "inputs.num1"}, {"name": "num2", "reference": "inputs.num2"}],
        },
        {
            "id": "b",
            "action": "square",
            "outputs": [{"name": "squared"}],
            "inputs": [{"name": "x", "reference": "a.sum"}],
        },
    )
    cache = Cache()
    report = await executor_with(registry, spec).run("rust", cache, inputs={"num1": 2.0, "num2": 3.0})
    assert report.success and report.cache.shared is cache  # the run's view: its inputs over the cache
    assert dagger_nb.get_value(cache, "b", "squared") == 25.0


async def test_dataframe_outputs_stay_dataframes(registry: ActionRegistry) -> None:
    registry.register("load", lambda: pd.DataFrame({"x": [1, 2, 3]}))
    registry.register("total", lambda frame: int(frame["x"].sum()))
    spec = workflow(
        "frames",
        {"id": "load", "action": "load", "outputs": [{"name": "frame"}]},
        {"id": "total", "action": "total", "inputs": [{"name": "frame", "reference": "load.frame"}]},
    )
    report = await executor_with(registry, spec).run("frames")
    assert isinstance(report.cache.get("load", "frame"), pd.DataFrame)
    assert report.cache.get("total", "result") == 6


async def test_context_describes_the_node_and_attempt(registry: ActionRegistry) -> None:
    seen: list[tuple[str, str, int, dict[str, object]]] = []

    @dagger_nb.action(registry=registry)
    async def look(x: int, ctx: dagger_nb.NodeContext) -> None:
        seen.append((ctx.node, ctx.workflow, ctx.attempt, ctx.inputs))
        assert ctx.executor is executor and ctx.run_id
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")

    spec = workflow(
        "ctx", {"id": "n", "action": "look", "inputs": [{"name": "x", "value": 3}]}, retry_strategy="Immediate"
    )
    executor = executor_with(registry, spec)
    assert (await executor.run("ctx")).success
    assert seen == [("n", "ctx", 1, {"x": 3}), ("n", "ctx", 2, {"x": 3})]


async def test_sync_actions_run_in_a_worker_thread_unless_inline(registry: ActionRegistry) -> None:
    loop_thread = threading.get_ident()
    registry.register("threaded", threading.get_ident)
    registry.register("inline", threading.get_ident, inline=True)
    spec = workflow("threads", {"id": "t", "action": "threaded"}, {"id": "i", "action": "inline"})
    report = await executor_with(registry, spec).run("threads")
    assert report.cache.get("t", "result") != loop_thread
    assert report.cache.get("i", "result") == loop_thread


# -- retries and timeouts ----------------------------------------------------------------------------


async def test_try_count_is_the_total_number_of_attempts(registry: ActionRegistry) -> None:
    attempts = 0

    @dagger_nb.action(registry=registry)
    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ValueError(f"boom {attempts}")
        return "ok"

    spec = workflow("retry", {"id": "f", "action": "flaky", "try_count": 3}, retry_strategy="Immediate")
    report = await executor_with(registry, spec).run("retry")
    outcome = report.outcomes["f"]
    assert report.success and outcome.attempts == 3
    assert outcome.retry_messages == ["Attempt 1 failed: ValueError: boom 1", "Attempt 2 failed: ValueError: boom 2"]


async def test_exhausted_attempts_give_the_final_error(registry: ActionRegistry) -> None:
    registry.register("broken", _raise(ValueError("bad data")))
    spec = workflow(
        "retry", {"id": "f", "action": "broken", "try_count": 2}, retry_strategy="Immediate", on_failure="stop"
    )
    outcome = (await executor_with(registry, spec).run("retry")).outcomes["f"]
    assert outcome.status == "failed" and outcome.attempts == 2
    assert outcome.error == "Failed after 2 attempts. Last error: ValueError: bad data"
    assert len(outcome.retry_messages) == 2


async def test_onfailure_false_means_exactly_one_attempt(registry: ActionRegistry) -> None:
    registry.register("broken", _raise(ValueError("no")))
    spec = workflow("once", {"id": "f", "action": "broken", "try_count": 5, "onfailure": False}, on_failure="stop")
    outcome = (await executor_with(registry, spec).run("once")).outcomes["f"]
    assert outcome.attempts == 1


async def test_try_count_defaults_to_config_max_attempts(registry: ActionRegistry) -> None:
    registry.register("broken", _raise(ValueError("no")))
    spec = workflow(
        "default", {"id": "f", "action": "broken"}, max_attempts=4, retry_strategy="Immediate", on_failure="stop"
    )
    assert (await executor_with(registry, spec).run("default")).outcomes["f"].attempts == 4


@pytest.mark.parametrize(
    ("strategy", "delays"),
    [
        ("Immediate", [0.0, 0.0, 0.0]),
        ({"Linear": {"delay_secs": 0.001}}, [0.001, 0.001, 0.001]),
        (
            {"Exponential": {"initial_delay_secs": 0.001, "max_delay_secs": 0.003, "multiplier": 2.0}},
            [0.001, 0.002, 0.003],
        ),
    ],
    ids=["immediate", "linear", "exponential-capped"],
)
async def test_retry_delays_follow_the_strategy(
    registry: ActionRegistry, strategy: object, delays: list[float]
) -> None:
    registry.register("broken", _raise(ValueError("no")))
    spec = workflow(
        "delays", {"id": "f", "action": "broken", "try_count": 4}, retry_strategy=strategy, on_failure="stop"
    )
    executor = executor_with(registry, spec)
    handle = executor.start("delays")
    await handle
    retrying = [e async for e in handle.subscribe() if isinstance(e, dagger_nb.NodeRetrying)]
    assert [e.delay for e in retrying] == pytest.approx(delays)
    assert [e.attempt for e in retrying] == [1, 2, 3]
    await executor.aclose()


async def test_timeout_bounds_each_attempt(registry: ActionRegistry) -> None:
    @dagger_nb.action(registry=registry)
    async def hang() -> None:
        await anyio.sleep_forever()

    spec = workflow(
        "slow",
        {"id": "h", "action": "hang", "timeout": 0.05, "try_count": 2},
        retry_strategy="Immediate",
        on_failure="stop",
    )
    outcome = (await executor_with(registry, spec).run("slow")).outcomes["h"]
    assert outcome.status == "failed" and outcome.attempts == 2
    assert outcome.retry_messages[0].startswith("Attempt 1 failed: node 'h' timed out after 0.05s (attempt 1)")
    assert outcome.error == "Failed after 2 attempts. Last error: node 'h' timed out after 0.05s (attempt 2)"


async def test_timeout_also_bounds_blocking_sync_actions(registry: ActionRegistry) -> None:
    release = threading.Event()
    registry.register("block", lambda: release.wait(10))
    spec = workflow("blocking", {"id": "b", "action": "block", "timeout": 0.05, "onfailure": False}, on_failure="stop")
    try:
        outcome = (await executor_with(registry, spec).run("blocking")).outcomes["b"]
    finally:
        release.set()
    assert outcome.error == "Failed after 1 attempt. Last error: node 'b' timed out after 0.05s (attempt 1)"


async def test_run_timeout_cancels_running_nodes_and_fails_the_run(registry: ActionRegistry) -> None:
    @dagger_nb.action(registry=registry)
    async def hang() -> None:
        await anyio.sleep_forever()

    spec = workflow(
        "too-long",
        {"id": "h", "action": "hang"},
        {"id": "after", "action": "hang", "dependencies": ["h"]},
        timeout_seconds=0.05,
    )
    report = await executor_with(registry, spec).run("too-long")
    assert report.status == "failed"
    assert report.error == "Run timed out after 0.05s (config.timeout_seconds)"
    assert report.outcomes["h"].status == "cancelled"
    assert report.outcomes["after"].status == "pending"


# -- failure policies --------------------------------------------------------------------------------


def _raise(error: Exception):  # type: ignore[no-untyped-def]
    def action() -> None:
        raise error

    return action


async def test_on_failure_stop_cancels_running_nodes_and_starts_nothing(registry: ActionRegistry) -> None:
    slow_started = anyio.Event()

    @dagger_nb.action(registry=registry)
    async def slow() -> None:
        slow_started.set()
        await anyio.sleep_forever()

    @dagger_nb.action(registry=registry)
    async def fail_after_slow_started() -> None:
        await slow_started.wait()
        raise RuntimeError("broken")

    registry.register("noop", lambda: None, inline=True)
    spec = workflow(
        "stop",
        {"id": "slow", "action": "slow"},
        {"id": "bad", "action": "fail_after_slow_started", "onfailure": False},
        {"id": "later", "action": "noop", "dependencies": ["bad"]},
        {"id": "queued", "action": "noop"},
        on_failure="Stop",
        max_parallel_nodes=2,
    )
    report = await executor_with(registry, spec).run("stop")
    assert report.status == "failed"
    assert report.error == "node 'bad' failed: Failed after 1 attempt. Last error: RuntimeError: broken"
    statuses = {node: o.status for node, o in report.outcomes.items()}
    assert statuses == {"slow": "cancelled", "bad": "failed", "later": "pending", "queued": "pending"}


async def test_on_failure_continue_skips_only_the_dependents(registry: ActionRegistry) -> None:
    registry.register("bad", _raise(RuntimeError("broken")))
    registry.register("ok", lambda: "fine", inline=True)
    spec = workflow(
        "continue",
        {"id": "bad", "action": "bad", "onfailure": False},
        {"id": "child", "action": "ok", "dependencies": ["bad"]},
        {"id": "grandchild", "action": "ok", "dependencies": ["child"]},
        {"id": "other", "action": "ok"},
        {"id": "after_other", "action": "ok", "dependencies": ["other"]},
        on_failure="continue",
    )
    handle = executor_with(registry, spec).start("continue")
    report = await handle
    statuses = {node: o.status for node, o in report.outcomes.items()}
    assert statuses == {
        "bad": "failed",
        "child": "skipped",
        "grandchild": "skipped",
        "other": "succeeded",
        "after_other": "succeeded",
    }
    assert report.status == "failed"
    assert report.outcomes["grandchild"].error == "skipped because upstream node 'bad' failed"
    skipped = [e.node async for e in handle.subscribe() if isinstance(e, dagger_nb.NodeSkipped)]
    assert skipped == ["child", "grandchild"]


async def test_on_failure_pause_lets_running_nodes_finish_and_resume_reruns_the_rest(
    registry: ActionRegistry,
) -> None:
    failed = anyio.Event()
    runs: dict[str, int] = {}

    @dagger_nb.action(registry=registry)
    async def steady(ctx: dagger_nb.NodeContext) -> str:
        runs[ctx.node] = runs.get(ctx.node, 0) + 1
        if ctx.node == "steady":
            await failed.wait()  # still running when the other node fails
        return ctx.node

    @dagger_nb.action(registry=registry)
    async def fragile() -> str:
        failed.set()
        raise RuntimeError("needs a fix")

    spec = workflow(
        "pause",
        {"id": "steady", "action": "steady"},
        {"id": "fragile", "action": "fragile", "onfailure": False},
        {
            "id": "after",
            "action": "steady",
            "dependencies": ["fragile", "steady"],
            "inputs": [{"name": "x", "reference": "fragile.result"}],
        },
        max_parallel_nodes=2,
    )
    registry.register("steady_with_input", steady)
    executor = executor_with(registry, spec)
    report = await executor.run("pause")
    assert report.status == "paused"
    assert {n: o.status for n, o in report.outcomes.items()} == {
        "steady": "succeeded",
        "fragile": "failed",
        "after": "pending",
    }

    @dagger_nb.action(registry=registry)
    async def fragile() -> str:  # noqa: F811 - the user fixes the action in a new cell
        return "fixed"

    @dagger_nb.action("steady", registry=registry)
    async def steady_again(x: str, ctx: dagger_nb.NodeContext) -> str:
        runs[ctx.node] = runs.get(ctx.node, 0) + 1
        return f"after {x}"

    resumed = await executor.resume(report.run_id)
    assert resumed.run_id == report.run_id and resumed.status == "succeeded"
    assert resumed.cache.get("after", "result") == "after fixed"
    assert runs == {"steady": 1, "after": 1}
    with pytest.raises(ExecutionError, match="is succeeded; only paused, failed, cancelled or interrupted runs"):
        await executor.resume(report.run_id)


async def test_pause_is_the_default_policy(registry: ActionRegistry) -> None:
    registry.register("bad", _raise(RuntimeError("x")))
    spec = workflow("default-policy", {"id": "bad", "action": "bad", "onfailure": False})
    assert (await executor_with(registry, spec).run("default-policy")).status == "paused"


async def test_failure_handler_is_called_once_with_ctx_and_error(registry: ActionRegistry) -> None:
    calls: list[tuple[str, str]] = []
    registry.register("bad", _raise(RuntimeError("broken")))

    @dagger_nb.action(registry=registry)
    async def on_bad(ctx: dagger_nb.NodeContext, error: str) -> None:
        calls.append((ctx.node, error))

    spec = workflow(
        "handled",
        {"id": "n", "action": "bad", "failure": "on_bad", "try_count": 2},
        retry_strategy="Immediate",
        on_failure="stop",
    )
    report = await executor_with(registry, spec).run("handled")
    assert calls == [("n", "Failed after 2 attempts. Last error: RuntimeError: broken")]
    assert report.outcomes["n"].notes == []


async def test_failing_failure_handler_is_noted_and_never_hides_the_error(registry: ActionRegistry) -> None:
    registry.register("bad", _raise(RuntimeError("original")))
    registry.register("handler", _raise(ValueError("handler broke")))
    spec = workflow(
        "handled", {"id": "n", "action": "bad", "failure": "handler", "onfailure": False}, on_failure="stop"
    )
    outcome = (await executor_with(registry, spec).run("handled")).outcomes["n"]
    assert outcome.error == "Failed after 1 attempt. Last error: RuntimeError: original"
    assert outcome.notes == ["failure handler 'handler' failed: ValueError: handler broke"]


async def test_unregistered_failure_handler_warns_at_load_and_is_noted(registry: ActionRegistry) -> None:
    registry.register("bad", _raise(RuntimeError("x")))
    executor = DagExecutor(registry)
    with pytest.warns(dagger_nb.DaggerWarning, match="node 'n': failure handler 'failure_function1' is not registered"):
        executor.load_yaml("name: w\nnodes:\n  - {id: n, action: bad, failure: failure_function1, onfailure: false}\n")
    outcome = (await executor.run("w")).outcomes["n"]
    assert outcome.notes == ["failure handler 'failure_function1' is not registered; it was not called"]


async def test_empty_failure_means_no_handler(registry: ActionRegistry) -> None:
    registry.register("ok", lambda: 1, inline=True)
    executor = DagExecutor(registry)
    executor.load_yaml("name: w\nnodes:\n  - {id: n, action: ok, failure: ''}\n")
    assert (await executor.run("w")).success


async def test_unproduced_reference_fails_without_retry_naming_input_and_reference(registry: ActionRegistry) -> None:
    registry.register("nothing", lambda: None, inline=True)
    registry.register("use", lambda value: value, inline=True)
    spec = workflow(
        "gap",
        {"id": "src", "action": "nothing", "outputs": [{"name": "rows"}]},
        {"id": "use", "action": "use", "try_count": 3, "inputs": [{"name": "value", "reference": "src.rows"}]},
        {"id": "arg", "action": "use", "inputs": [{"name": "value", "reference": "inputs.missing"}]},
        on_failure="continue",
    )
    report = await executor_with(registry, spec).run("gap")
    assert report.outcomes["use"].attempts == 1
    assert report.outcomes["use"].error == (
        "Failed after 1 attempt. Last error: input 'value' references 'src.rows', which node 'src' did not "
        "produce (it produced nothing)"
    )
    assert report.outcomes["arg"].error.endswith(
        "input 'value' references run input 'missing' ('inputs.missing'), which was not given"
    )


async def test_action_exceptions_never_escape_the_executor(registry: ActionRegistry) -> None:
    registry.register("bad", _raise(ZeroDivisionError("division by zero")))
    registry.register("needs_more", lambda other: other, inline=True)
    spec = workflow(
        "errors",
        {"id": "a", "action": "bad", "onfailure": False},
        {"id": "b", "action": "needs_more", "inputs": [{"name": "other", "value": 1}], "onfailure": False},
        on_failure="continue",
    )
    executor = executor_with(registry, spec)
    # Redefined after loading (as a notebook cell may do), so the load-time signature check passed.
    registry.register("needs_more", lambda needed: needed, inline=True)
    report = await executor.run("errors")
    assert report.outcomes["a"].error.endswith("ZeroDivisionError: division by zero")
    assert "missing 1 required positional argument: 'needed'" in report.outcomes["b"].error


async def test_action_unregistered_after_loading_fails_the_node(registry: ActionRegistry) -> None:
    registry.register("temp", lambda: 1, inline=True)
    spec = workflow("gone", {"id": "n", "action": "temp", "onfailure": False})
    executor = executor_with(registry, spec)
    registry.unregister("temp")
    report = await executor.run("gone")
    assert report.outcomes["n"].error == "Failed after 1 attempt. Last error: unknown action 'temp' (registered: none)"


async def test_unknown_or_empty_workflow_is_a_clear_error(registry: ActionRegistry) -> None:
    executor = executor_with(registry, workflow("empty"))
    with pytest.raises(WorkflowNotFound, match=r"unknown workflow 'nope' \(known: empty\)"):
        await executor.run("nope")
    with pytest.raises(ExecutionError, match="workflow 'empty' has no nodes; there is nothing to run"):
        await executor.run("empty")


async def test_executor_config_is_a_base_the_workflow_overrides(registry: ActionRegistry) -> None:
    registry.register("bad", _raise(RuntimeError("x")))
    executor = DagExecutor(
        registry, config=dagger_nb.DagConfig(max_attempts=2, on_failure="stop", retry_strategy="Immediate")
    )
    executor.load_yaml("name: w\nconfig: {max_attempts: 3}\nnodes: [{id: n, action: bad}]\n")
    report = await executor.run("w")
    assert report.status == "failed"  # stop from the executor's config
    assert report.outcomes["n"].attempts == 3  # max_attempts from the workflow's


async def test_load_yaml_checks_actions_against_the_registry(registry: ActionRegistry) -> None:
    registry.register("known", lambda: 1)
    with pytest.raises(
        dagger_nb.WorkflowSpecError,
        match=r"<string>:3: workflow 'w', node 'n': unknown action "
        r"'fit' \(registered: known\)",
    ):
        DagExecutor(registry).load_yaml("name: w\nnodes:\n  - {id: n, action: fit}\n")


async def test_list_dags_and_add_workflow(registry: ActionRegistry) -> None:
    registry.register("a", lambda: 1)
    executor = DagExecutor(registry)
    executor.load_yaml("name: first\ndescription: the first\nnodes: [{id: n, action: a}]\n")
    executor.add_workflow(workflow("second", {"id": "n", "action": "a"}))
    assert executor.list_dags() == [("first", "the first"), ("second", "")]
    with pytest.raises(dagger_nb.WorkflowSpecError, match="workflow 'bad', node 'n': unknown action 'zzz'"):
        executor.add_workflow(workflow("bad", {"id": "n", "action": "zzz"}))
