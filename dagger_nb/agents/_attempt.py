"""One attempt of a task: call its agent, bound it by its timeout, check and encode what it returned.

A sync agent runs in a worker thread, which cannot be stopped: when its
attempt times out the thread is abandoned and runs on. The attempt is
recorded as timed out at once, but the task's next attempt must not start
until that thread has returned, or two attempts of one task would run at the
same time. :func:`run_attempt` notes such a thread in the manager's
``_abandoned`` set; the thread takes itself out when it returns and tells the
job's run, which then lets the task start again.
"""

from __future__ import annotations

import contextlib
import json
import json.encoder
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from dagger_nb.agents.context import TaskContext
from dagger_nb.agents.journal import AttemptJournal
from dagger_nb.errors import DaggerError, NeedsDependencies

if TYPE_CHECKING:
    from dagger_nb.agents.manager import TaskManager
    from dagger_nb.agents.registry import TaskAgent


class Kind:
    """What an attempt came to: plain strings, since an Enum member costs three times as much
    to read in Python 3.11 (see PENDING in agents/model.py)."""

    OK = "ok"
    BLOCK = "block"
    ERROR = "error"  # a failed attempt: retried while retries are left
    FATAL = "fatal"  # retrying cannot help (invalid input, unknown agent)


@dataclass(slots=True)
class Result:
    task_id: str
    kind: str  # a Kind
    value: Any
    dependencies: list[str]  # the task's dependency list when the attempt started
    stored_output: str | None = None  # an OK output's JSON for the database (None without one)
    journal: AttemptJournal | None = None  # what the attempt added, committed with its outcome


async def run_attempt(manager: TaskManager, task_id: str, journal: AttemptJournal) -> Result:
    """Run one attempt of ``task_id``; what it came to, never an exception (but cancellation)."""
    task = manager._tasks[task_id]
    dependencies = task.dependencies
    try:
        agent = manager.registry.get(task.agent)
        if agent.input_schema is not None:
            agent.input_schema.validate(task.input)
    except DaggerError as error:
        return Result(task_id, Kind.FATAL, str(error), dependencies, journal=journal)
    ctx = TaskContext(manager, task, attempt=task.retry_count + 1, journal=journal)
    payload = dict(task.input)
    try:
        if task.timeout is None:
            output = await manager._call_agent(agent, payload, ctx)
        else:
            with anyio.move_on_after(task.timeout) as scope:
                output = await _call_bounded(manager, agent, payload, ctx)
            if scope.cancelled_caught:
                return Result(task_id, Kind.ERROR, f"Timeout after {task.timeout:g}s", dependencies, journal=journal)
        output, stored = check_output(manager, agent.name, agent.output_schema, output)
    except NeedsDependencies as error:
        return Result(task_id, Kind.BLOCK, error.reason, dependencies, journal=journal)
    except Exception as error:
        return Result(task_id, Kind.ERROR, _describe(error), dependencies, journal=journal)
    return Result(task_id, Kind.OK, output, dependencies, stored, journal=journal)


async def _call_bounded(manager: TaskManager, agent: TaskAgent, payload: dict[str, Any], ctx: TaskContext) -> Any:
    """The agent's call under a timeout: a local sync agent's thread is noted if it is abandoned."""
    if manager.backend is not None or agent.is_async:
        return await manager._call_agent(agent, payload, ctx)
    task_id = ctx.task_id
    state = _ThreadState()
    token = anyio.lowlevel.current_token()

    def call() -> Any:
        try:
            return agent.fn(payload, ctx)
        finally:
            with state.lock:
                state.finished = True
                abandoned = state.abandoned
            if abandoned:
                manager._abandoned.discard(task_id)
                with contextlib.suppress(Exception):  # the loop may be gone: nothing waits then
                    anyio.from_thread.run_sync(manager._thread_returned, task_id, token=token)

    try:
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with state.lock:
            if not state.finished:
                state.abandoned = True
                manager._abandoned.add(task_id)
        raise


class _ThreadState:
    __slots__ = ("abandoned", "finished", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished = False
        self.abandoned = False


def check_output(manager: TaskManager, agent: str, schema: Any, output: Any) -> tuple[dict[str, Any], str | None]:
    """The output, and with a database the ``TaskOutput`` JSON to store (strict JSON: a set or
    a date is refused rather than stored as something else)."""
    if output is None:
        output = {}
    if not isinstance(output, dict):
        raise DaggerError(f"agent '{agent}' returned {type(output).__name__}, expected a dict")
    if schema is not None:
        schema.validate(output)
    if manager._store is None:
        return output, None
    try:
        data = _encode_json(output)
    except (TypeError, ValueError, RecursionError) as error:
        why = "it contains itself or nests too deeply" if isinstance(error, RecursionError) else error
        raise DaggerError(f"output of agent '{agent}' cannot be stored as JSON: {why}") from None
    return output, f'{{"success": true, "data": {data}, "error": null}}'


def _json_encoder() -> Callable[[Any], str]:
    """json.dumps without its per-call cycle check (a third of its cost on a small output: a
    cyclic output ends in RecursionError instead) and, where Python has its C encoder, without
    building that encoder and a closure on every call (half of what is left)."""
    encoder = json.JSONEncoder(check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    try:  # the arguments JSONEncoder.iterencode passes it, in this Python
        chunks = make(None, encoder.default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
        if "".join(chunks(_SAMPLE, 0)) != encoder.encode(_SAMPLE):
            return encoder.encode
    except TypeError:  # another Python's signature
        return encoder.encode
    join = "".join
    return lambda value: join(chunks(value, 0))


_SAMPLE = {"text": "\u00e9\n\"", "numbers": [1, 2.5, float("inf"), None, True], "nested": {"a": []}}
_encode_json = _json_encoder()


def _describe(error: Exception) -> str:
    """Our errors are complete sentences; anything else is prefixed with its type."""
    return str(error) if isinstance(error, DaggerError) else f"{type(error).__name__}: {error}"
