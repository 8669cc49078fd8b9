"""dagger-nb: DAG workflows, task agents and pub/sub agents, made for Jupyter.

The public API is re-exported here; see the README for a tour. Each name is
imported on first access, so ``import dagger_nb`` stays fast and a script that
only runs workflows never loads the task agents, pub/sub, pandas or jsonschema.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagger_nb.agents import (
        JobFinished,
        JobHandle,
        JobReport,
        JobStalled,
        JobStatus,
        StallAction,
        Task,
        TaskAdded,
        TaskAgent,
        TaskAgentRegistry,
        TaskBlocked,
        TaskCompleted,
        TaskContext,
        TaskFailed,
        TaskManager,
        TaskOutput,
        TaskRetrying,
        TaskStarted,
        TaskStatus,
        TaskStatusChanged,
        TaskType,
        default_agent_registry,
        task_agent,
    )
    from dagger_nb.backends import DaskBackend
    from dagger_nb.cache import Cache, CacheConfig, get_value, insert_value, parse_input_from_name
    from dagger_nb.dag import (
        ActionRegistry,
        DagConfig,
        DagExecutor,
        ExecutionReport,
        HumanInputReceived,
        HumanInputRequested,
        InputSpec,
        NodeAdded,
        NodeCancelled,
        NodeContext,
        NodeFailed,
        NodeOutcome,
        NodeRetrying,
        NodeSkipped,
        NodeSpec,
        NodeStarted,
        NodeSucceeded,
        OnFailure,
        OutputSpec,
        RetryStrategy,
        RunFinished,
        RunHandle,
        WorkflowSpec,
        action,
        default_registry,
        load_workflow,
        load_workflows,
    )
    from dagger_nb.errors import (
        ActionError,
        ActionNotFound,
        AgentNotFound,
        BackendUnavailable,
        CacheKeyError,
        ChannelNotFound,
        DaggerError,
        DaggerWarning,
        DatabaseInUse,
        DependencyCycleError,
        ExecutionError,
        GraphChangeError,
        GraphvizNotFound,
        InvalidSchemaError,
        NeedsDependencies,
        NodeTimeout,
        Problem,
        PubSubError,
        RunNotFound,
        SchemaValidationError,
        StorageError,
        TaskError,
        WorkflowNotFound,
        WorkflowSpecError,
    )
    from dagger_nb.graph import render_svg
    from dagger_nb.pubsub import (
        Message,
        PubSub,
        PubSubAgent,
        PubSubAgentRegistry,
        PubSubContext,
        PubSubHandle,
        default_pubsub_registry,
        pubsub_agent,
    )

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ActionError": "dagger_nb.errors",
    "ActionNotFound": "dagger_nb.errors",
    "ActionRegistry": "dagger_nb.dag",
    "AgentNotFound": "dagger_nb.errors",
    "BackendUnavailable": "dagger_nb.errors",
    "Cache": "dagger_nb.cache",
    "CacheConfig": "dagger_nb.cache",
    "CacheKeyError": "dagger_nb.errors",
    "ChannelNotFound": "dagger_nb.errors",
    "DagConfig": "dagger_nb.dag",
    "DagExecutor": "dagger_nb.dag",
    "DaggerError": "dagger_nb.errors",
    "DaggerWarning": "dagger_nb.errors",
    "DaskBackend": "dagger_nb.backends",
    "DatabaseInUse": "dagger_nb.errors",
    "DependencyCycleError": "dagger_nb.errors",
    "ExecutionError": "dagger_nb.errors",
    "ExecutionReport": "dagger_nb.dag",
    "GraphChangeError": "dagger_nb.errors",
    "GraphvizNotFound": "dagger_nb.errors",
    "HumanInputReceived": "dagger_nb.dag",
    "HumanInputRequested": "dagger_nb.dag",
    "InputSpec": "dagger_nb.dag",
    "InvalidSchemaError": "dagger_nb.errors",
    "JobFinished": "dagger_nb.agents",
    "JobHandle": "dagger_nb.agents",
    "JobReport": "dagger_nb.agents",
    "JobStalled": "dagger_nb.agents",
    "JobStatus": "dagger_nb.agents",
    "Message": "dagger_nb.pubsub",
    "NeedsDependencies": "dagger_nb.errors",
    "NodeAdded": "dagger_nb.dag",
    "NodeCancelled": "dagger_nb.dag",
    "NodeContext": "dagger_nb.dag",
    "NodeFailed": "dagger_nb.dag",
    "NodeOutcome": "dagger_nb.dag",
    "NodeRetrying": "dagger_nb.dag",
    "NodeSkipped": "dagger_nb.dag",
    "NodeSpec": "dagger_nb.dag",
    "NodeStarted": "dagger_nb.dag",
    "NodeSucceeded": "dagger_nb.dag",
    "NodeTimeout": "dagger_nb.errors",
    "OnFailure": "dagger_nb.dag",
    "OutputSpec": "dagger_nb.dag",
    "Problem": "dagger_nb.errors",
    "PubSub": "dagger_nb.pubsub",
    "PubSubAgent": "dagger_nb.pubsub",
    "PubSubAgentRegistry": "dagger_nb.pubsub",
    "PubSubContext": "dagger_nb.pubsub",
    "PubSubError": "dagger_nb.errors",
    "PubSubHandle": "dagger_nb.pubsub",
    "RetryStrategy": "dagger_nb.dag",
    "RunFinished": "dagger_nb.dag",
    "RunHandle": "dagger_nb.dag",
    "RunNotFound": "dagger_nb.errors",
    "SchemaValidationError": "dagger_nb.errors",
    "StallAction": "dagger_nb.agents",
    "StorageError": "dagger_nb.errors",
    "Task": "dagger_nb.agents",
    "TaskAdded": "dagger_nb.agents",
    "TaskAgent": "dagger_nb.agents",
    "TaskAgentRegistry": "dagger_nb.agents",
    "TaskBlocked": "dagger_nb.agents",
    "TaskCompleted": "dagger_nb.agents",
    "TaskContext": "dagger_nb.agents",
    "TaskError": "dagger_nb.errors",
    "TaskFailed": "dagger_nb.agents",
    "TaskManager": "dagger_nb.agents",
    "TaskOutput": "dagger_nb.agents",
    "TaskRetrying": "dagger_nb.agents",
    "TaskStarted": "dagger_nb.agents",
    "TaskStatus": "dagger_nb.agents",
    "TaskStatusChanged": "dagger_nb.agents",
    "TaskType": "dagger_nb.agents",
    "WorkflowNotFound": "dagger_nb.errors",
    "WorkflowSpec": "dagger_nb.dag",
    "WorkflowSpecError": "dagger_nb.errors",
    "action": "dagger_nb.dag",
    "default_agent_registry": "dagger_nb.agents",
    "default_pubsub_registry": "dagger_nb.pubsub",
    "default_registry": "dagger_nb.dag",
    "get_value": "dagger_nb.cache",
    "insert_value": "dagger_nb.cache",
    "load_workflow": "dagger_nb.dag",
    "load_workflows": "dagger_nb.dag",
    "parse_input_from_name": "dagger_nb.cache",
    "pubsub_agent": "dagger_nb.pubsub",
    "render_svg": "dagger_nb.graph",
    "task_agent": "dagger_nb.agents",
}


# Subpackages reachable as attributes (``dagger_nb.dag.X``) without importing them first,
# as they were when this package imported everything eagerly.
_SUBMODULES = frozenset(
    {"agents", "backends", "cache", "dag", "errors", "events", "graph", "pubsub", "schema", "storage"}
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext dagger_nb``: register the magics (IPython is imported only here)."""
    from dagger_nb.notebook import load_ipython_extension as load
    from dagger_nb.schema import preload_jsonschema

    load(ipython)
    # After the notebook layer's imports, not alongside them: two threads importing
    # overlapping module graphs at once can meet a half-initialised module.
    preload_jsonschema()


__all__ = [
    "ActionError",
    "ActionNotFound",
    "ActionRegistry",
    "AgentNotFound",
    "BackendUnavailable",
    "Cache",
    "CacheConfig",
    "CacheKeyError",
    "ChannelNotFound",
    "DagConfig",
    "DagExecutor",
    "DaggerError",
    "DaggerWarning",
    "DaskBackend",
    "DatabaseInUse",
    "DependencyCycleError",
    "ExecutionError",
    "ExecutionReport",
    "GraphChangeError",
    "GraphvizNotFound",
    "HumanInputReceived",
    "HumanInputRequested",
    "InputSpec",
    "InvalidSchemaError",
    "JobFinished",
    "JobHandle",
    "JobReport",
    "JobStalled",
    "JobStatus",
    "Message",
    "NeedsDependencies",
    "NodeAdded",
    "NodeCancelled",
    "NodeContext",
    "NodeFailed",
    "NodeOutcome",
    "NodeRetrying",
    "NodeSkipped",
    "NodeSpec",
    "NodeStarted",
    "NodeSucceeded",
    "NodeTimeout",
    "OnFailure",
    "OutputSpec",
    "Problem",
    "PubSub",
    "PubSubAgent",
    "PubSubAgentRegistry",
    "PubSubContext",
    "PubSubError",
    "PubSubHandle",
    "RetryStrategy",
    "RunFinished",
    "RunHandle",
    "RunNotFound",
    "SchemaValidationError",
    "StallAction",
    "StorageError",
    "Task",
    "TaskAdded",
    "TaskAgent",
    "TaskAgentRegistry",
    "TaskBlocked",
    "TaskCompleted",
    "TaskContext",
    "TaskError",
    "TaskFailed",
    "TaskManager",
    "TaskOutput",
    "TaskRetrying",
    "TaskStarted",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskType",
    "WorkflowNotFound",
    "WorkflowSpec",
    "WorkflowSpecError",
    "action",
    "default_agent_registry",
    "default_pubsub_registry",
    "default_registry",
    "get_value",
    "insert_value",
    "load_workflow",
    "load_workflows",
    "parse_input_from_name",
    "pubsub_agent",
    "render_svg",
    "task_agent",
]
