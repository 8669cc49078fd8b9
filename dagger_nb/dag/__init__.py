"""DAG Flow: workflows written in YAML, checked statically, run concurrently."""

from __future__ import annotations

from dagger_nb.dag.actions import Action, ActionRegistry, NodeContext, action, default_registry
from dagger_nb.dag.events import (
    DagEvent,
    HumanInputReceived,
    HumanInputRequested,
    NodeAdded,
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
from dagger_nb.dag.report import ExecutionReport, NodeOutcome
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
    "WorkflowSpec",
    "action",
    "default_registry",
    "load_workflow",
    "load_workflows",
    "parse_workflow",
]
