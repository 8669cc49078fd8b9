"""Small builders shared by the executor tests."""

from __future__ import annotations

from typing import Any

from dagger_nb import ActionRegistry, DagExecutor
from dagger_nb.dag.spec import DagConfig, NodeSpec, WorkflowSpec


def workflow(name: str, *nodes: dict[str, Any], **config: Any) -> WorkflowSpec:
    """A workflow from node dicts; config keys as keyword arguments."""
    return WorkflowSpec(
        name=name,
        config=DagConfig.model_validate(config),
        nodes=[NodeSpec.model_validate(node) for node in nodes],
    )


def executor_with(registry: ActionRegistry, *specs: WorkflowSpec, **kwargs: Any) -> DagExecutor:
    executor = DagExecutor(registry, **kwargs)
    for spec in specs:
        executor.add_workflow(spec)
    return executor
