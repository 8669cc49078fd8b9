"""dagger-nb: DAG workflows, task agents and pub/sub agents, made for Jupyter.

The public API is re-exported here; see the README for a tour.
"""

from __future__ import annotations

from dagger_nb.cache import Cache, CacheConfig, get_value, insert_value, parse_input_from_name
from dagger_nb.errors import (
    ActionError,
    ActionNotFound,
    AgentNotFound,
    BackendUnavailable,
    CacheKeyError,
    ChannelNotFound,
    DaggerError,
    DatabaseInUse,
    DependencyCycleError,
    ExecutionError,
    GraphvizNotFound,
    InvalidSchemaError,
    NeedsDependencies,
    NodeTimeout,
    Problem,
    RunNotFound,
    SchemaValidationError,
    StorageError,
    TaskError,
    WorkflowNotFound,
    WorkflowSpecError,
)
from dagger_nb.graph import render_svg

__version__ = "0.1.0"

__all__ = [
    "ActionError",
    "ActionNotFound",
    "AgentNotFound",
    "BackendUnavailable",
    "Cache",
    "CacheConfig",
    "CacheKeyError",
    "ChannelNotFound",
    "DaggerError",
    "DatabaseInUse",
    "DependencyCycleError",
    "ExecutionError",
    "GraphvizNotFound",
    "InvalidSchemaError",
    "NeedsDependencies",
    "NodeTimeout",
    "Problem",
    "RunNotFound",
    "SchemaValidationError",
    "StorageError",
    "TaskError",
    "WorkflowNotFound",
    "WorkflowSpecError",
    "get_value",
    "insert_value",
    "parse_input_from_name",
    "render_svg",
]
