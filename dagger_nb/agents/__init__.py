"""Task agents: a persistent task manager where agents create work while a job runs.

An objective is broken into stories, tasks and subtasks by agents at runtime;
the :class:`TaskManager` runs ready tasks in parallel, parks tasks that wait
for new dependencies, detects stalls, and (with a SQLite ``db``) survives a
crash of the process. See ``docs/agents.md``.
"""

from __future__ import annotations

from dagger_nb.agents.context import TaskContext
from dagger_nb.agents.events import (
    JobEvent,
    JobFinished,
    JobStalled,
    TaskAdded,
    TaskBlocked,
    TaskCompleted,
    TaskFailed,
    TaskRetrying,
    TaskStarted,
    TaskStatusChanged,
)
from dagger_nb.agents.job import JobHandle, JobReport, JobUsage, StallAction
from dagger_nb.agents.manager import TaskManager
from dagger_nb.agents.model import JobStatus, Task, TaskOutput, TaskStatus, TaskType
from dagger_nb.agents.registry import TaskAgent, TaskAgentRegistry, default_agent_registry, task_agent
from dagger_nb.agents.spec import ChildTask, TaskSpec

__all__ = [
    "ChildTask",
    "JobEvent",
    "JobFinished",
    "JobHandle",
    "JobReport",
    "JobStalled",
    "JobStatus",
    "JobUsage",
    "StallAction",
    "Task",
    "TaskAdded",
    "TaskAgent",
    "TaskAgentRegistry",
    "TaskBlocked",
    "TaskCompleted",
    "TaskContext",
    "TaskFailed",
    "TaskManager",
    "TaskOutput",
    "TaskRetrying",
    "TaskSpec",
    "TaskStarted",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskType",
    "default_agent_registry",
    "task_agent",
]
