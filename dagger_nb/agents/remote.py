"""Task agents on a cluster: a picklable context, and the wrappers that run agents on workers.

An agent on a Dask worker cannot reach the :class:`TaskManager` (it lives in the
notebook). It gets a :class:`RemoteTaskContext` instead: the task's snapshot,
its dependencies' outputs computed beforehand, and ``add_task``/``spawn``/
``depend_on``/``delegate``/``record_usage`` that record the change (a new task's
id chosen on the worker, by the same scheme). The manager replays the recorded
changes after the agent returns (or raises :class:`NeedsDependencies`), so the
job grows exactly as it would have locally. If the agent fails, its recorded
changes are dropped with the failed attempt, except the usage it reported,
which counts.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from dagger_nb._callables import Callee
from dagger_nb.agents.journal import check_usage
from dagger_nb.agents.model import Task, TaskType
from dagger_nb.agents.spec import check_options, child_task_id, new_task_id
from dagger_nb.errors import AgentError, DaggerError, NeedsDependencies, TaskError, describe_error

if TYPE_CHECKING:
    from dagger_nb.agents.context import TaskContext
    from dagger_nb.agents.registry import TaskAgent
    from dagger_nb.backends import Backend

Change = tuple[str, dict[str, Any]]


class RemoteTaskContext:
    """What an agent running on a cluster worker sees of its job."""

    def __init__(self, ctx: TaskContext) -> None:
        #: The running task's id, job and attempt (as on :class:`TaskContext`).
        self.task_id = ctx.task_id
        self.job_id = ctx.job_id
        self.attempt = ctx.attempt
        #: A snapshot of the running task.
        self.task: Task = ctx.task
        try:
            self._outputs: list[dict[str, Any]] | None = ctx.dependency_outputs()
            self._outputs_error: str | None = None
        except DaggerError as error:
            self._outputs, self._outputs_error = None, str(error)
        #: ``add_task`` / ``spawn`` calls made on the worker, replayed by the manager.
        self.changes: list[Change] = []

    @property
    def manager(self) -> Any:
        """Not available on a worker: the manager lives in the notebook."""
        raise AgentError(
            "ctx.manager is not available to an agent running on a cluster worker; "
            "use ctx.add_task(...) and ctx.spawn(...), which the manager replays"
        )

    def dependency_outputs(self) -> list[dict[str, Any]]:
        """The outputs of the task's dependencies, in dependency order."""
        if self._outputs is None:
            raise TaskError(self._outputs_error or "dependency outputs are not available")
        return self._outputs

    def add_task(self, description: str, agent: str, input: dict[str, Any] | None = None, **options: Any) -> str:
        """Record a new task in this job (added by the manager after the agent returns; ``options``
        as for :meth:`TaskContext.add_task`)."""
        check_options(options)
        task_id = options.get("task_id") or new_task_id()
        options.update(task_id=task_id, parent=options.get("parent", self.task_id))
        self.changes.append(("add_task", {"description": description, "agent": agent, "input": input, **options}))
        return task_id

    def record_usage(self, tokens: int, cost: float | None = None, model: str | None = None) -> None:
        """Record usage (see :meth:`TaskContext.record_usage`), counted by the manager with the attempt."""
        check_usage(tokens, cost, model)
        self.changes.append(("record_usage", {"tokens": tokens, "cost": cost, "model": model}))

    def spawn(
        self, agent: str, input: dict[str, Any] | None, *, description: str, task_type: TaskType = TaskType.SUBTASK
    ) -> str:
        """Record a child task and make the running task depend on it (see :meth:`TaskContext.spawn`)."""
        child = self.add_task(description, agent, input, task_type=task_type)
        self.changes.append(("add_dependency", {"depends_on": child}))
        return child

    def depend_on(self, task_id: str) -> None:
        """Record that the running task depends on ``task_id`` (see :meth:`TaskContext.depend_on`)."""
        self.changes.append(("add_dependency", {"depends_on": task_id}))

    def delegate(self, children: Any, *, wait: bool = True) -> Any:
        """:meth:`TaskContext.delegate` on a worker: the children are added by the manager when the
        agent returns; when the task runs again with every child done, their outputs."""
        from dagger_nb.agents.context import _delegation, _keyed

        keys, _ = _delegation(children)  # a bad child fails here, on the worker, naming its key
        ids = [child_task_id(self.task_id, key) for key in keys]
        dependencies = self.task.dependencies
        if self._outputs is not None and all(child in dependencies for child in ids):
            if not wait:
                return _keyed(children, ids)
            return _keyed(children, [self._outputs[dependencies.index(child)] for child in ids])
        self.changes.append(("delegate", {"children": children}))
        if not wait:
            return _keyed(children, ids)
        raise NeedsDependencies(f"waiting for {len(ids)} delegated task{'s' if len(ids) != 1 else ''}")

    def __repr__(self) -> str:
        return f"<RemoteTaskContext task={self.task_id!r} job={self.job_id!r} attempt={self.attempt}>"


async def call_on_backend(backend: Backend, agent: TaskAgent, payload: dict[str, Any], ctx: TaskContext) -> Any:
    """Run ``agent`` through ``backend`` (a :class:`dagger_nb.DaskBackend`) and replay what it changed."""
    runner = Callee(agent.name, run_async_agent if agent.is_async else run_sync_agent, agent.is_async, False, False)
    outcome, value, changes = await backend.invoke(runner, args=(agent.fn, payload, RemoteTaskContext(ctx)))
    if outcome == "failed":
        replay([change for change in changes if change[0] == "record_usage"], ctx)
        raise value
    replay(changes, ctx)
    if outcome == "blocked":
        raise NeedsDependencies(value)
    return value


def replay(changes: list[Change], ctx: TaskContext) -> None:
    """Apply the changes an agent recorded on a worker, in the order it made them."""
    for kind, arguments in changes:
        if kind == "record_usage":
            ctx.record_usage(**arguments)
        elif kind == "add_task":
            ctx.add_task(**arguments)
        elif kind == "delegate":
            ctx.delegate(arguments["children"], wait=False)
        else:
            ctx.depend_on(arguments["depends_on"])


def run_sync_agent(fn: Any, payload: dict[str, Any], ctx: RemoteTaskContext) -> tuple[str, Any, list[Change]]:
    """On the worker: call a sync agent; ``("done", output, changes)``, ``("blocked", reason, changes)``
    or ``("failed", error, changes)``."""
    try:
        return "done", fn(payload, ctx), ctx.changes
    except NeedsDependencies as blocked:
        return "blocked", blocked.reason, ctx.changes
    except Exception as error:  # raised again in the notebook, once the usage it reported is counted
        return "failed", _portable(error), ctx.changes


async def run_async_agent(
    fn: Any, payload: dict[str, Any], ctx: RemoteTaskContext
) -> tuple[str, Any, list[Change]]:
    """On the worker: await an async agent (same result shape as :func:`run_sync_agent`)."""
    try:
        return "done", await fn(payload, ctx), ctx.changes
    except NeedsDependencies as blocked:
        return "blocked", blocked.reason, ctx.changes
    except Exception as error:  # raised again in the notebook, once the usage it reported is counted
        return "failed", _portable(error), ctx.changes


def _portable(error: Exception) -> Exception:
    """``error``, or an :class:`AgentError` with its text when it cannot be sent back (not picklable)."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return AgentError(describe_error(error))
    return error
