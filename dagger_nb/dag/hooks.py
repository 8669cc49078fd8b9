"""Calling an executor's hooks (:meth:`DagExecutor.add_hook`) on each event of a run.

Separate from :mod:`dagger_nb.dag.executor` because hook dispatch is a run-time concern of its own (a
hook's bug must not break the run, an async hook's awaitable is owned by the run's task group); the
scheduler installs :func:`call_hooks` as a listener of each run's events.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from dagger_nb.dag.calls import hook_name
from dagger_nb.dag.handle import RunHandle
from dagger_nb.errors import describe_error

if TYPE_CHECKING:
    from dagger_nb.dag.events import DagEvent
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.run import Run


def call_hooks(executor: DagExecutor, run: Run, event: DagEvent) -> None:
    """Call each of ``executor``'s hooks with ``event`` and a handle on ``run``; an awaitable a hook returns
    is awaited in the run's task group (the run ends after it), and a hook's failure becomes a run note."""
    handle = RunHandle(run, executor)
    for hook in executor._hooks:
        try:
            result = hook(event, handle)
        except Exception as error:  # a hook's bug must not break the run
            run.notes.append(f"hook {hook_name(hook)} failed on {type(event).__name__}: {describe_error(error)}")
            continue
        if inspect.isawaitable(result):
            if run.group is not None:  # the run ends only after its hooks have
                run.group.start_soon(_await_hook, run, hook, result, type(event).__name__)
            else:
                run.late_hooks.append((hook, result, type(event).__name__))


async def _await_hook(run: Run, hook: Any, pending: Awaitable[object], event: str) -> None:
    try:
        await pending
    except Exception as error:  # a hook's bug must not break the run
        run.notes.append(f"hook {hook_name(hook)} failed on {event}: {describe_error(error)}")
