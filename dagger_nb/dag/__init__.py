"""DAG Flow: workflows written in YAML, checked statically, run concurrently."""

from __future__ import annotations

from dagger_nb.dag.loader import load_workflow, load_workflows, parse_workflow
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
    "DagConfig",
    "HumanTimeoutAction",
    "InputSpec",
    "NodeSpec",
    "OnFailure",
    "OutputSpec",
    "RetryStrategy",
    "WorkflowSpec",
    "load_workflow",
    "load_workflows",
    "parse_workflow",
]
