"""One attempt of a task: call its agent, bound it by its timeout, check and encode what it returned.

A sync agent runs in a worker thread, which cannot be stopped: when its
attempt times out (or its job is cancelled) the thread is abandoned and runs
on. The attempt is recorded as timed out at once, but the task's next attempt
must not start until that thread has returned, or two attempts of one task
would run at the same time. Every local sync call is noted in the process-wide
record of ``_threads.py`` while it runs; a job run that finds the task there
waits (:meth:`AttemptRunner.wait_for_thread`) and is told when it returned.
"""

from __future__ import annotations

import json
import json.encoder
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from dagger_nb._capture import LazyLogBuffer, route_logs, unroute_logs
from dagger_nb._traceback import format_failure, printable
from dagger_nb.agents._threads import LIVE_THREADS, ThreadKey, file_identity, on_this_loop
from dagger_nb.agents.context import TaskContext
from dagger_nb.agents.journal import AttemptJournal
from dagger_nb.agents.remote import call_on_backend
from dagger_nb.errors import AgentError, DaggerError, NeedsDependencies, describe_error

if TYPE_CHECKING:
    from dagger_nb.agents._edits import TaskEdits
    from dagger_nb.agents._graph import TaskGraph
    from dagger_nb.agents.journal import Journal
    from dagger_nb.agents.manager import TaskManager
    from dagger_nb.agents.model import TaskRecord
    from dagger_nb.agents.registry import TaskAgent


class Kind:
    """What an attempt came to: plain strings, since a read of an Enum member is never
    specialised (see PENDING in agents/model.py)."""

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
    traceback: str | None = None  # an ERROR's stack, trimmed to the agent's frames
    logs: list[str] | None = None  # what the attempt printed or logged (None: nothing)


class AttemptRunner:
    """Runs attempts of a manager's tasks; the manager builds one and hands it to its job runs.

    ``manager`` is read for its public settings (``registry``, ``backend``) and is
    the agents' ``ctx.manager``; ``thread_returned(task_id)`` is called on the
    loop when an abandoned thread a run waits for returns.
    """

    __slots__ = ("_edits", "_graph", "_journal", "_manager", "_thread_returned", "_where")

    def __init__(
        self,
        manager: TaskManager,
        graph: TaskGraph,
        journal: Journal,
        thread_returned: Callable[[str], None],
        *,
        edits: TaskEdits,
    ) -> None:
        self._manager = manager
        self._edits = edits
        self._graph = graph
        self._journal = journal
        self._thread_returned = thread_returned
        #: the file's identity in the keys of the process's record of running threads
        self._where = object() if journal.store is None else file_identity(journal.store.path)

    def wait_for_thread(self, task: TaskRecord) -> bool:
        """True when a thread of an earlier attempt of ``task`` still runs in this process (this
        manager's, or an earlier manager's on the same file): ``thread_returned(task_id)`` is
        called on this loop once it has returned."""
        key = (self._where, task.job_id, task.task_id)
        if key not in LIVE_THREADS:  # the common case: no callback to build
            return False
        return LIVE_THREADS.wait_for(key, partial(on_this_loop, self._thread_returned, task.task_id))

    async def run(self, task_id: str, journal: AttemptJournal) -> Result:
        """Run one attempt of ``task_id``; what it came to, never an exception (but cancellation)."""
        manager = self._manager
        task = self._graph.tasks[task_id]
        dependencies = task.dependencies
        try:
            agent = manager.registry.get(task.agent)
            if agent.input_schema is not None:
                agent.input_schema.validate(task.input)
        except DaggerError as error:
            return Result(task_id, Kind.FATAL, printable(str(error)), dependencies, journal=journal)
        ctx = TaskContext(manager, task, edits=self._edits, attempt=task.retry_count + 1, journal=journal)
        payload = dict(task.input)
        # Prints and log records of the agent (a worker thread gets a copy of this context) go to
        # the attempt's own lines as well as to the cell; nothing is made until it writes.
        logs = LazyLogBuffer()
        routing = route_logs(logs)
        try:
            if task.timeout is None:
                output = await self.call_agent(agent, payload, ctx)
            else:
                with anyio.move_on_after(task.timeout) as scope:
                    output = await self.call_agent(agent, payload, ctx)
                if scope.cancelled_caught:
                    timed_out = f"task '{task_id}' timed out after {task.timeout:g}s (attempt {task.retry_count + 1})"
                    return Result(task_id, Kind.ERROR, timed_out, dependencies,
                                  journal=journal, logs=_lines(logs))
            output, stored = check_output(
                self._journal.store is not None, agent.name, agent.output_schema, output, task_id=task_id
            )
        except NeedsDependencies as error:
            return Result(task_id, Kind.BLOCK, printable(str(error.reason)), dependencies, journal=journal)
        except Exception as error:
            # Our own errors (a schema, an unstorable output) are complete sentences about the output,
            # not the agent's code: their stack would show only dagger-nb's frames.
            stack = None if isinstance(error, DaggerError) else printable(format_failure(error))
            return Result(task_id, Kind.ERROR, describe_error(error), dependencies, journal=journal, traceback=stack,
                          logs=_lines(logs))
        finally:
            unroute_logs(routing)
        lines = _lines(logs)
        if lines is not None and stored is not None:
            stored = f'{stored[:-1]}, "logs": {json.dumps(lines)}}}'
        return Result(task_id, Kind.OK, output, dependencies, stored, journal=journal, logs=lines)

    def call_agent(self, agent: TaskAgent, payload: dict[str, Any], ctx: TaskContext) -> Awaitable[Any]:
        """The one seam where an agent is called (a backend plugs in here)."""
        # Each branch returns the awaitable itself, not wrapped in another coroutine: the runner
        # awaits one per task.
        backend = self._manager.backend
        if backend is not None:
            return call_on_backend(backend, agent, payload, ctx)
        if agent.is_async:
            return agent.fn(payload, ctx)
        return self._call_in_thread(agent, payload, ctx)

    async def _call_in_thread(self, agent: TaskAgent, payload: dict[str, Any], ctx: TaskContext) -> Any:
        """A local sync agent's call in a worker thread, noted in the process's record of running
        threads from now until it returns: abandoned (a timeout, a cancelled job), it runs on."""
        key: ThreadKey = (self._where, ctx.job_id, ctx.task_id)
        state = _ThreadState()
        live = LIVE_THREADS

        def call() -> Any:
            with state.lock:
                if state.ended:  # the attempt ended before this thread got to it: not run at all
                    return None
                state.started = True
            try:
                return agent.fn(payload, ctx)
            finally:
                live.end(key)

        live.begin(key)
        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        finally:
            with state.lock:
                state.ended = True
                # A call that has not started never will (the worker skips a cancelled call, or
                # call() sees ``ended``); a started one ends its record itself when it returns.
                unstarted = not state.started
            if unstarted:
                live.end(key)


class _ThreadState:
    __slots__ = ("ended", "lock", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.ended = False


def check_output(
    stored: bool, agent: str, schema: Any, output: Any, *, task_id: str = "?"
) -> tuple[dict[str, Any], str | None]:
    """The output, and when ``stored`` (a database) the ``TaskOutput`` JSON to store (strict
    JSON: a set or a date is refused rather than stored as something else, and so is text
    that is not valid Unicode, which the file could hold but nothing could write out again)."""
    if output is None:
        output = {}
    if not isinstance(output, dict):
        raise AgentError(f"agent '{agent}' returned {type(output).__name__}, expected a dict")
    if schema is not None:
        schema.validate(output)
    if not stored:
        return output, None
    try:
        data = _encode_json(output)
    except (TypeError, ValueError, RecursionError) as error:
        why = "it contains itself or nests too deeply" if isinstance(error, RecursionError) else error
        raise AgentError(f"output of agent '{agent}' cannot be stored as JSON: {why}") from None
    if "\\ud" in data:  # a surrogate escaped by the ASCII encoder: a pair (fine), or a lone one
        try:
            json.dumps(output, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as error:
            bad = error.object[error.start : error.end]
            raise AgentError(
                f"task '{task_id}': output of agent '{agent}' cannot be stored: it holds text that is not "
                f"valid Unicode ({printable(bad)}, a lone surrogate: decode bytes with errors='replace', "
                "or keep them as bytes.hex())"
            ) from None
    return output, f'{{"success": true, "data": {data}, "error": null}}'


def _json_encoder() -> Callable[[Any], str]:
    """json.dumps without its per-call cycle check (a large part of its cost on a small output:
    a cyclic output ends in RecursionError instead) and, where Python has its C encoder, without
    building that encoder and a closure on every call."""
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


def _lines(logs: LazyLogBuffer) -> list[str] | None:
    """The lines ``logs`` holds (each already storable: the buffer escapes what it keeps); None when
    there are none."""
    return logs.take()
