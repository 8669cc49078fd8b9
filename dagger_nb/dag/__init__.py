"""DAG Flow: workflows written in YAML, checked statically, run concurrently.

Names are imported on first access: checking a workflow file (the loader and the
spec) does not load the executor, its run store or its scheduler.
"""

from __future__ import annotations

import importlib

# Not ``typing.TYPE_CHECKING``: importing typing would be most of what importing this package costs.
# Type checkers treat any constant of this name as true.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from dagger_nb.dag.actions import Action, ActionRegistry, NodeContext, action, default_registry
    from dagger_nb.dag.events import (
        DagEvent,
        HumanInputReceived,
        HumanInputRequested,
        NodeAdded,
        NodeCached,
        NodeCancelled,
        NodeFailed,
        NodeRetrying,
        NodeSkipped,
        NodeStarted,
        NodeSucceeded,
        NodeWaiting,
        RunFinished,
    )
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.human import HumanRequest
    from dagger_nb.dag.loader import load_workflow, load_workflows, parse_workflow
    from dagger_nb.dag.report import ExecutionReport, NodeOutcome, RunStatus
    from dagger_nb.dag.run import RunHandle
    from dagger_nb.dag.spec import (
        DagConfig,
        HumanTimeoutAction,
        InputSpec,
        NodeSpec,
        OnFailure,
        OutputSpec,
        RetryStrategy,
        WorkflowSpec,
    )

_EXPORTS: dict[str, str] = {
    "Action": "dagger_nb.dag.actions",
    "ActionRegistry": "dagger_nb.dag.actions",
    "DagConfig": "dagger_nb.dag.spec",
    "DagEvent": "dagger_nb.dag.events",
    "DagExecutor": "dagger_nb.dag.executor",
    "ExecutionReport": "dagger_nb.dag.report",
    "HumanInputReceived": "dagger_nb.dag.events",
    "HumanInputRequested": "dagger_nb.dag.events",
    "HumanRequest": "dagger_nb.dag.human",
    "HumanTimeoutAction": "dagger_nb.dag.spec",
    "InputSpec": "dagger_nb.dag.spec",
    "NodeAdded": "dagger_nb.dag.events",
    "NodeCached": "dagger_nb.dag.events",
    "NodeCancelled": "dagger_nb.dag.events",
    "NodeContext": "dagger_nb.dag.actions",
    "NodeFailed": "dagger_nb.dag.events",
    "NodeOutcome": "dagger_nb.dag.report",
    "NodeRetrying": "dagger_nb.dag.events",
    "NodeSkipped": "dagger_nb.dag.events",
    "NodeSpec": "dagger_nb.dag.spec",
    "NodeStarted": "dagger_nb.dag.events",
    "NodeSucceeded": "dagger_nb.dag.events",
    "NodeWaiting": "dagger_nb.dag.events",
    "OnFailure": "dagger_nb.dag.spec",
    "OutputSpec": "dagger_nb.dag.spec",
    "RetryStrategy": "dagger_nb.dag.spec",
    "RunFinished": "dagger_nb.dag.events",
    "RunHandle": "dagger_nb.dag.run",
    "RunStatus": "dagger_nb.dag.report",
    "WorkflowSpec": "dagger_nb.dag.spec",
    "action": "dagger_nb.dag.actions",
    "default_registry": "dagger_nb.dag.actions",
    "load_workflow": "dagger_nb.dag.loader",
    "load_workflows": "dagger_nb.dag.loader",
    "parse_workflow": "dagger_nb.dag.loader",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "Action",
    "ActionRegistry",
    "DagConfig",
    "DagEvent",
    "DagExecutor",
    "ExecutionReport",
    "HumanInputReceived",
    "HumanInputRequested",
    "HumanRequest",
    "HumanTimeoutAction",
    "InputSpec",
    "NodeAdded",
    "NodeCached",
    "NodeCancelled",
    "NodeContext",
    "NodeFailed",
    "NodeOutcome",
    "NodeRetrying",
    "NodeSkipped",
    "NodeSpec",
    "NodeStarted",
    "NodeSucceeded",
    "NodeWaiting",
    "OnFailure",
    "OutputSpec",
    "RetryStrategy",
    "RunFinished",
    "RunHandle",
    "RunStatus",
    "WorkflowSpec",
    "action",
    "default_registry",
    "load_workflow",
    "load_workflows",
    "parse_workflow",
]
