"""How one call of a node's action is made.

Separate from :mod:`dagger_nb.dag.scheduler` (which re-exports :func:`hook_name`) because choosing
where a call goes (a call sent ahead, the executor's backend, a tracked thread for a sync action
with a timeout) and wrapping it in the node's timeout is the seam between the attempt loop and the
backends, independent of retries, failure policies and workers.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb.backends import LocalBackend
from dagger_nb.dag.actions import NodeContext
from dagger_nb.dag.attempts import AbandonedAttempt
from dagger_nb.errors import NodeTimeout

if TYPE_CHECKING:
    from dagger_nb.dag.actions import Action
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.run import Run
    from dagger_nb.dag.spec import NodeSpec


def call_action(
    executor: DagExecutor, run: Run, node: NodeSpec, *, action: Action, kwargs: dict[str, Any], attempt: int,
    handler: bool = False,
) -> Awaitable[Any]:
    """The awaitable of one call of ``action`` (not a coroutine itself: a trivial node's
    cost is mostly coroutine layers); ``handler``: the node's failure handler."""
    context = None
    if action.takes_ctx:
        ctx = kwargs["ctx"] = NodeContext(
            node.id, run.spec.name, run.run_id, attempt, dict(kwargs), run.cache, executor, _run=run
        )
        if not isinstance(executor.backend, LocalBackend):  # it may run elsewhere, with a copy
            context = ctx.remote(item.source for item in node.inputs)
    kwargs = action.accepted(kwargs)
    call = None
    if run.ahead is not None and not handler:
        call = run.ahead.call(node, action, kwargs, attempt)
    thread = None
    if call is None:
        if (node.timeout is not None and not handler and not action.is_async and not action.inline
                and isinstance(executor.backend, LocalBackend)):
            # its thread outlives a timeout: the next attempt waits for it
            thread = AbandonedAttempt(attempt, drive=run.drive)
            action = thread.track(action)
        backend: Any = executor.backend  # ``prints`` is an extension of Backend.invoke
        prints = None
        if run.incremental is not None and not handler and getattr(backend, "fingerprints_outputs", False):
            prints = run.incremental.output_prints(node, action)
        if prints is not None:  # the worker hashes the big outputs it made: they need not be hashed here
            call = backend.invoke(action, kwargs, context=context, outcome=run.outcomes[node.id], prints=prints)
        else:
            call = backend.invoke(action, kwargs, context=context, outcome=run.outcomes[node.id])
    return call if node.timeout is None else _with_timeout(call, node, run, thread, attempt)


async def _with_timeout(
    call: Awaitable[Any], node: NodeSpec, run: Run, thread: AbandonedAttempt | None, attempt: int
) -> Any:
    assert node.timeout is not None
    if thread is not None:
        run.abandoned[node.id] = thread  # until it returns: no other attempt of the node may start
    with anyio.move_on_after(node.timeout) as scope:
        result = await call
        if thread is not None:
            del run.abandoned[node.id]
        return result
    if scope.cancelled_caught:
        raise NodeTimeout(node.id, node.timeout, attempt=attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def hook_name(hook: Any) -> str:
    """A hook's name for messages."""
    return getattr(hook, "__qualname__", None) or repr(hook)

