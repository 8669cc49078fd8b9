"""The executor's behavioural tests (tests/dag), rerun with actions on a Dask cluster.

Only the tests whose actions keep no state in the test's process are reused as
they are (the rest are rewritten cluster-friendly in test_dask_backend.py). Each
runs twice: with ``inline=True`` actions kept on the notebook's loop (the
default) and with every action sent to the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

import tests.dag.test_executor as executor_tests
import tests.dag.test_runs as run_tests
from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.backends.dask import DaskBackend
from tests.dag import helpers

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("on_dask")]


@pytest.fixture(params=["inline-local", "all-remote"])
def backend(request: pytest.FixtureRequest, dask_client: Any) -> DaskBackend:
    if request.param == "all-remote" and request.node.originalname in KEEP_INLINE_LOCAL:
        pytest.skip("asserts that inline actions run on the notebook's loop")
    return DaskBackend(dask_client, run_inline_locally=request.param == "inline-local")


@pytest.fixture
def on_dask(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, backend: DaskBackend
) -> Iterator[None]:
    """Every executor the reused tests build gets the Dask backend (and uses it: through
    ``invoke`` or, for nodes sent to the cluster ahead of their inputs, ``send``)."""
    calls: list[str] = []
    invoke = backend.invoke

    async def counted(action: Any, kwargs: dict[str, Any], **options: Any) -> Any:
        calls.append(action.name)
        return await invoke(action, kwargs, **options)

    monkeypatch.setattr(backend, "invoke", counted)
    send = backend.send

    def counted_send(action: Any, kwargs: dict[str, Any], **options: Any) -> Any:
        calls.append(action.name)
        return send(action, kwargs, **options)

    monkeypatch.setattr(backend, "send", counted_send)

    def executor_with(registry: ActionRegistry, *specs: Any, **kwargs: Any) -> DagExecutor:
        return helpers.executor_with(registry, *specs, backend=backend, **kwargs)

    for module in (executor_tests, run_tests):
        monkeypatch.setattr(module, "executor_with", executor_with)
        if hasattr(module, "DagExecutor"):
            monkeypatch.setattr(module, "DagExecutor", partial(DagExecutor, backend=backend))
    yield
    if request.node.originalname not in RUN_NO_ACTION:
        assert calls, "the test ran no action through the Dask backend"


@pytest.fixture
def registry(request: pytest.FixtureRequest) -> ActionRegistry:
    """The registry fixture of the module the reused test comes from."""
    if request.function.__module__ == run_tests.__name__:
        registry = ActionRegistry()
        registry.register("double", lambda x: 2 * x, inline=True)
        return registry
    return ActionRegistry()


KEEP_INLINE_LOCAL = {"test_sync_actions_run_in_a_worker_thread_unless_inline"}
# no action reaches the backend: unregistered before the run; closed before the node starts
RUN_NO_ACTION = {"test_action_unregistered_after_loading_fails_the_node", "test_aclose_cancels_background_runs"}

# outputs
test_return_value_is_stored_by_declared_outputs = executor_tests.test_return_value_is_stored_by_declared_outputs
test_missing_declared_output_fails_the_node_naming_it = (
    executor_tests.test_missing_declared_output_fails_the_node_naming_it
)
test_dataframe_outputs_stay_dataframes = executor_tests.test_dataframe_outputs_stay_dataframes
test_sync_actions_run_in_a_worker_thread_unless_inline = (
    executor_tests.test_sync_actions_run_in_a_worker_thread_unless_inline
)
# retries and timeouts
test_exhausted_attempts_give_the_final_error = executor_tests.test_exhausted_attempts_give_the_final_error
test_onfailure_false_means_exactly_one_attempt = executor_tests.test_onfailure_false_means_exactly_one_attempt
test_try_count_defaults_to_config_max_attempts = executor_tests.test_try_count_defaults_to_config_max_attempts
test_retry_delays_follow_the_strategy = executor_tests.test_retry_delays_follow_the_strategy
test_timeout_bounds_each_attempt = executor_tests.test_timeout_bounds_each_attempt
test_run_timeout_cancels_running_nodes_and_fails_the_run = (
    executor_tests.test_run_timeout_cancels_running_nodes_and_fails_the_run
)
# failure policies
test_on_failure_continue_skips_only_the_dependents = executor_tests.test_on_failure_continue_skips_only_the_dependents
test_pause_is_the_default_policy = executor_tests.test_pause_is_the_default_policy
test_failing_failure_handler_is_noted_and_never_hides_the_error = (
    executor_tests.test_failing_failure_handler_is_noted_and_never_hides_the_error
)
test_unregistered_failure_handler_warns_at_load_and_is_noted = (
    executor_tests.test_unregistered_failure_handler_warns_at_load_and_is_noted
)
test_empty_failure_means_no_handler = executor_tests.test_empty_failure_means_no_handler
test_unproduced_reference_fails_without_retry_naming_input_and_reference = (
    executor_tests.test_unproduced_reference_fails_without_retry_naming_input_and_reference
)
test_action_exceptions_never_escape_the_executor = executor_tests.test_action_exceptions_never_escape_the_executor
test_action_unregistered_after_loading_fails_the_node = (
    executor_tests.test_action_unregistered_after_loading_fails_the_node
)
test_executor_config_is_a_base_the_workflow_overrides = (
    executor_tests.test_executor_config_is_a_base_the_workflow_overrides
)
# runs, events and the synchronous facade
test_late_subscriber_receives_every_event_so_far = run_tests.test_late_subscriber_receives_every_event_so_far
test_aclose_cancels_background_runs = run_tests.test_aclose_cancels_background_runs
test_run_works_inside_a_running_loop_on_a_private_loop = (
    run_tests.test_run_works_inside_a_running_loop_on_a_private_loop
)
test_run_works_in_a_plain_script = run_tests.test_run_works_in_a_plain_script
test_runs_frame_lists_runs_newest_first = run_tests.test_runs_frame_lists_runs_newest_first
test_each_run_gets_its_own_cache_unless_one_is_given = run_tests.test_each_run_gets_its_own_cache_unless_one_is_given
test_limited_cache_never_evicts_what_a_pending_node_needs = (
    run_tests.test_limited_cache_never_evicts_what_a_pending_node_needs
)
