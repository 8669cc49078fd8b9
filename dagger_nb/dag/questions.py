"""Asking a person a question during a run and waiting for the answer (``ctx.ask_human``, supervisor reviews).

Separate from :mod:`dagger_nb.dag.executor` because it needs only the run (its questions, events and
config), not the executor; the executor exposes it as ``_ask_human`` for the callers that hold one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb.dag.events import HumanInputReceived, HumanInputRequested
from dagger_nb.dag.human import HumanRequest, PauseForHuman
from dagger_nb.dag.spec import HumanTimeoutAction
from dagger_nb.schema import compile_schema_async

if TYPE_CHECKING:
    from dagger_nb.dag.run import Run


async def ask_human(
    run: Run, node: str, prompt: str, *, schema: dict[str, Any] | str | None, timeout: float | None, default: Any,
) -> Any:
    """Ask a person ``prompt`` for node ``node`` of ``run`` and wait for an answer matching ``schema``.

    Without one within ``timeout`` seconds (default the run's ``human_wait_minutes``) the run's
    ``human_timeout_action`` decides: return ``default``, or raise :class:`PauseForHuman`.
    """
    compiled = await compile_schema_async(schema, where=f"answer to '{prompt}'")
    request = HumanRequest(run.run_id, node, prompt, compiled.schema if compiled else None, default,
                           compiled=compiled)
    run.questions[request.request_id] = request
    run.events.emit(HumanInputRequested(run.run_id, node, request.request_id, prompt, request.schema, default))
    if timeout is None and run.config.human_wait_minutes is not None:
        timeout = run.config.human_wait_minutes * 60
    try:
        with anyio.move_on_after(timeout):
            await request.answered.wait()
    finally:
        run.questions.pop(request.request_id, None)
    if request.answered.is_set():
        run.events.emit(HumanInputReceived(run.run_id, node, request.request_id, request.value))
        return request.value
    if run.config.human_timeout_action is HumanTimeoutAction.PAUSE:
        raise PauseForHuman(prompt)
    run.events.emit(HumanInputReceived(run.run_id, node, request.request_id, default, timed_out=True))
    return default
