"""Every exception dagger-nb raises, under one root.

::

    DaggerError
    ├── WorkflowSpecError (ValueError)      a workflow file or text has problems
    ├── WorkflowNotFound (KeyError)         no workflow registered under that name
    ├── RunNotFound (KeyError)              no run with that id
    ├── NodeNotFound (KeyError)             a workflow has no node with that id
    ├── ActionNotFound (KeyError)           no action registered under that name
    ├── ActionError (RuntimeError)          an action broke the calling convention
    │   └── ActionDefinitionError (ValueError)  an action cannot be registered as given
    ├── ExecutionError (RuntimeError)       a run cannot start or continue
    │   ├── NoRunningLoop                   an async-only call where no event loop runs
    │   └── QuestionNotFound (KeyError)     a run has no open question with that id
    ├── GraphChangeError (ValueError)       nodes cannot be added to a running workflow
    ├── NodeTimeout (TimeoutError)          one attempt of a node took too long
    ├── CacheKeyError (KeyError)            a cache lookup missed
    ├── CacheFormatError (ValueError)       a cache cannot be written as or read from JSON
    ├── FetchFailed (RuntimeError)          a result kept on a cluster could not be fetched
    ├── ReadOnlyInputs (TypeError)          a run's inputs were written to
    ├── GraphvizError (RuntimeError)        Graphviz could not render a graph
    │   └── GraphvizNotFound                Graphviz's ``dot`` is not installed
    ├── StorageError (RuntimeError)         the SQLite file is unusable
    │   └── DatabaseInUse                   another live process holds the file
    ├── TaskError (ValueError)              a task manager call was given bad input
    │   ├── DependencyCycleError            a dependency would close a cycle
    │   ├── TaskNotFound (KeyError)         no task with that id
    │   └── JobNotFound (KeyError)          no job with that id
    ├── AgentError (RuntimeError)           a task agent broke the calling convention
    ├── TokenBudgetExceeded (RuntimeError)  reported token usage passed max_tokens
    ├── AgentNotFound (KeyError)            no task or pub/sub agent under that name
    ├── InvalidSchemaError (ValueError)     a JSON Schema is itself invalid
    ├── SchemaValidationError (ValueError)  a payload does not match its schema
    ├── ChannelNotFound (KeyError)          strict pub/sub and an unknown channel
    ├── PubSubError (ValueError)            a pub/sub call was given bad input
    ├── BackendUnavailable (ImportError)    an optional backend's package is missing
    ├── CommandLineError (ValueError)       the ``dagger-nb`` command was given bad arguments
    ├── NotSentAhead                        a call sent ahead lacks an input (the executor runs it as usual)
    └── NeedsDependencies                   raised by a task agent to wait for new work

    DaggerWarning (UserWarning)             something will not work as the file suggests

Errors carry their context as attributes and build their message from them,
so ``str(error)`` is always a complete sentence a user can act on;
:func:`describe_error` turns any exception into the text shown to people.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dagger_nb._traceback import printable


class DaggerError(Exception):
    """Root of every error raised by dagger-nb."""


class _KeyErrorMessage(KeyError):
    """KeyError whose ``str()`` is the message, not its quoted repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a workflow, located as precisely as we can.

    >>> str(Problem("etl.yaml", 14, "etl", "train", "unknown action 'fit'"))
    "etl.yaml:14: workflow 'etl', node 'train': unknown action 'fit'"
    """

    path: str | None
    line: int | None
    workflow: str | None
    node: str | None
    message: str

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
        elif self.line is not None:
            where = f"line {self.line}"
        subject = ", ".join(
            part
            for part in (
                f"workflow '{self.workflow}'" if self.workflow else "",
                f"node '{self.node}'" if self.node else "",
            )
            if part
        )
        prefix = ": ".join(part for part in (where, subject) if part)
        return f"{prefix}: {self.message}" if prefix else self.message


class WorkflowSpecError(DaggerError, ValueError):
    """A workflow has one or more problems; ``problems`` lists every one of them."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def _known(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names) if names else "none"


class WorkflowNotFound(DaggerError, _KeyErrorMessage):
    """No workflow is registered under ``name``."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        super().__init__(f"unknown workflow '{name}' (known: {_known(known)})")


class RunNotFound(DaggerError, _KeyErrorMessage):
    """No run has the id ``run_id``."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id '{run_id}'")


class NodeNotFound(DaggerError, _KeyErrorMessage):
    """Workflow ``workflow`` has no node ``node``; the message lists a few of the ``known`` ids."""

    def __init__(self, workflow: str, node: str, known: Sequence[str] = ()) -> None:
        self.workflow = workflow
        self.node = node
        self.known = tuple(known)
        super().__init__(f"workflow '{workflow}' has no node '{node}' (known: {_brief(self.known)})")


def _brief(names: Sequence[str], *, limit: int = 6) -> str:
    """At most ``limit`` of ``names`` in their order, then how many were left out."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


class ActionNotFound(DaggerError, _KeyErrorMessage):
    """No action is registered under ``name``."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        super().__init__(f"unknown action '{name}' (registered: {_known(known)})")


class ActionError(DaggerError, RuntimeError):
    """An action returned something its node cannot store, or was misused."""


class ActionDefinitionError(ActionError, ValueError):
    """An action cannot be registered as given (no name, not callable, a bad option)."""


class ExecutionError(DaggerError, RuntimeError):
    """A run cannot start or continue (empty workflow, run already finished, ...)."""


class NoRunningLoop(ExecutionError):
    """An async-only call (``await x.run()``, ``x.start()``) was made where no event loop runs, as in
    a script; the message names the synchronous form (``x.run_sync()``)."""


class QuestionNotFound(ExecutionError, _KeyErrorMessage):
    """Run ``run_id`` has no open question ``request_id`` (never asked, or already answered);
    the message lists the ``open`` ones."""

    def __init__(self, run_id: str, request_id: str, open: Iterable[str] = ()) -> None:
        self.run_id = run_id
        self.request_id = request_id
        self.open = list(open)
        super().__init__(
            f"run '{run_id}' has no open question '{request_id}' (open: {', '.join(self.open) or 'none'})"
        )


class GraphChangeError(DaggerError, ValueError):
    """Nodes cannot be added to a running workflow as asked (the message says why)."""


class NodeTimeout(DaggerError, TimeoutError):
    """Attempt ``attempt`` of ``node`` ran longer than ``seconds``.

    >>> str(NodeTimeout("train", 2, attempt=1))
    "node 'train' timed out after 2s (attempt 1)"
    """

    def __init__(self, node: str, seconds: float, *, attempt: int | None = None) -> None:
        self.node = node
        self.seconds = seconds
        self.attempt = attempt
        which = "" if attempt is None else f" (attempt {attempt})"
        super().__init__(f"node '{node}' timed out after {seconds:g}s{which}")


class CacheKeyError(DaggerError, _KeyErrorMessage):
    """``key`` is not in cache namespace ``namespace`` (``key=None``: the namespace holds nothing).

    The message says what is there instead (a few names and a count): ``held_keys``, the
    namespace's keys, and ``held_namespaces``, the cache's namespaces when that one is empty.
    """

    def __init__(
        self,
        namespace: str,
        key: str | None = None,
        *,
        held_keys: Sequence[str] = (),
        held_namespaces: Sequence[str] = (),
    ) -> None:
        self.namespace = namespace
        self.key = key
        self.held_keys = tuple(held_keys)
        self.held_namespaces = tuple(held_namespaces)
        if key is None:
            message = f"cache has no namespace '{namespace}'"
        else:
            held = _some(self.held_keys, "key") if self.held_keys else "nothing"
            message = f"cache has no key '{key}' in namespace '{namespace}', which holds {held}"
        if not self.held_keys and self.held_namespaces:  # a mistyped namespace: say which ones exist
            message += f"; the cache holds {_some(self.held_namespaces, 'namespace')}"
        elif not self.held_keys:
            message += "; the cache is empty"
        super().__init__(message)


def _some(names: Sequence[str], noun: str, *, shown: int = 5) -> str:
    """``key 'a'``, ``keys 'a', 'b'`` or ``12 keys: 'a', ... and 7 more``: bounded for a message."""
    listed = ", ".join(f"'{name}'" for name in names[:shown])
    if len(names) == 1:
        return f"{noun} {listed}"
    if len(names) <= shown:
        return f"{noun}s {listed}"
    return f"{len(names)} {noun}s: {listed} and {len(names) - shown} more"


class CacheFormatError(DaggerError, ValueError):
    """A cache cannot be turned into JSON (a value is not JSON-able) or rebuilt from it (the text
    is not the ``{"ns": {"key": {"value": ...}}}`` layout)."""


class FetchFailed(DaggerError, RuntimeError):
    """The value of output ``key`` of node ``namespace`` was kept on a cluster and could not be fetched."""

    def __init__(self, namespace: str, key: str, error: BaseException) -> None:
        self.namespace = namespace
        self.key = key
        self.error = error
        super().__init__(f"output '{key}' of node '{namespace}' was kept on the cluster and could not be fetched: "
                         f"{describe_error(error)}")


class ReadOnlyInputs(DaggerError, TypeError):
    """Something tried to write ``key`` among a run's inputs, which only the run sets."""

    def __init__(self, namespace: str, key: str) -> None:
        self.namespace = namespace
        self.key = key
        super().__init__(
            f"cannot write '{namespace}.{key}': a run's inputs are read-only (pass them as inputs=...)"
        )


class GraphvizError(DaggerError, RuntimeError):
    """Graphviz could not render a graph; ``detail`` is what it said."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"Graphviz could not render the graph: {detail}")


class GraphvizNotFound(GraphvizError):
    """Graphviz's ``dot`` program is needed but not installed."""

    def __init__(self) -> None:
        self.detail = "'dot' is not on PATH"
        # its own sentence, not GraphvizError's "could not render": the fix is an install
        DaggerError.__init__(
            self,
            "Graphviz's 'dot' program was not found on PATH; install it with "
            "'apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' (macOS) "
            "or 'conda install -c conda-forge graphviz'",
        )


class StorageError(DaggerError, RuntimeError):
    """The SQLite database cannot be used."""


class DatabaseInUse(StorageError):
    """Another live process already has ``path`` open for writing.

    ``pid`` is that process's id, or None when the system does not say;
    ``resolved`` is the file ``path`` leads to when it is a link.
    """

    def __init__(self, path: str, *, pid: int | None = None, resolved: str | None = None) -> None:
        self.path = path
        self.pid = pid
        self.resolved = resolved
        where = f"'{path}'" if resolved in (None, path) else f"'{path}' (the file '{resolved}')"
        holder = f"PID {pid}" if pid is not None else "PID unknown"
        super().__init__(
            f"database {where} is in use by another live process ({holder}); close that process "
            "or use another file"
        )


class TaskError(DaggerError, ValueError):
    """A task manager call was given bad input."""


class DependencyCycleError(TaskError):
    """Adding a dependency would close ``cycle`` (first element repeated at the end)."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__(f"dependency cycle: {' -> '.join(self.cycle)}")


class TaskNotFound(TaskError, _KeyErrorMessage):
    """No task has the id ``task_id`` (a ``KeyError`` too, and a ``TaskError`` as before)."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"unknown task '{task_id}'")


class JobNotFound(TaskError, _KeyErrorMessage):
    """No job has the id ``job_id`` (a ``KeyError`` too, and a ``TaskError`` as before)."""

    def __init__(self, job_id: str, known: Iterable[str] = ()) -> None:
        self.job_id = job_id
        known = list(known)
        super().__init__(f"unknown job '{job_id}' (known: {', '.join(known) if known else 'none'})")


class AgentError(DaggerError, RuntimeError):
    """A task agent broke the calling convention (returned something that is not a dict or
    cannot be stored, or used what its context does not offer where it runs)."""


class TokenBudgetExceeded(DaggerError, RuntimeError):
    """A run's or a job's reported token usage, ``used``, passed its ``budget`` (``max_tokens``)."""

    def __init__(self, used: int, budget: int) -> None:
        self.used = used
        self.budget = budget
        super().__init__(f"token budget exceeded: {used} of {budget}")


class AgentNotFound(DaggerError, _KeyErrorMessage):
    """No agent is registered under ``name``."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        super().__init__(f"unknown agent '{name}' (registered: {_known(known)})")


class InvalidSchemaError(DaggerError, ValueError):
    """A JSON Schema given to dagger-nb is not itself a valid schema."""


class SchemaValidationError(DaggerError, ValueError):
    """A payload does not match the schema it is checked against."""

    def __init__(self, message: str, *, where: str = "", path: str = "") -> None:
        self.where = where
        self.path = path
        location = f" at '{path}'" if path else ""
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}invalid payload{location}: {message}")


class ChannelNotFound(DaggerError, _KeyErrorMessage):
    """A strict pub/sub was asked about a channel that does not exist."""

    def __init__(self, channel: str, known: Iterable[str] = ()) -> None:
        self.channel = channel
        super().__init__(f"unknown channel '{channel}' (known: {_known(known)})")


class BackendUnavailable(DaggerError, ImportError):
    """An optional backend was requested but its package is not installed."""


class CommandLineError(DaggerError, ValueError):
    """The ``dagger-nb`` command was given something it cannot use (a bad ``--input``, a missing
    file, an actions module that does not import); the command prints the message and exits 1."""


class NotSentAhead(DaggerError):
    """A call sent ahead could not take an input from its dependencies' results.

    The executor catches it and runs the node the usual way, which reports what is missing.
    """


class NeedsDependencies(DaggerError):
    """Raised by a task agent after adding dependencies: park the task until they finish."""

    def __init__(self, reason: str = "waiting for new dependencies") -> None:
        self.reason = reason
        super().__init__(reason)


class PubSubError(DaggerError, ValueError):
    """A pub/sub call was given bad input (an agent without a name, a bad channel name, ...)."""


class DaggerWarning(UserWarning):
    """Something in a workflow will not behave as written (for example an unregistered failure handler)."""


def describe_error(exception: BaseException) -> str:
    """The text shown to people for ``exception``: our errors are complete sentences and read as
    they are; anything else is ``Type: message`` (just ``Type`` when the message is empty).

    Printable and storable whatever the message holds: a lone surrogate (an undecodable file
    name from ``os.fsdecode``) is written as its escape.

    >>> describe_error(ValueError("bad")), describe_error(KeyError()), describe_error(TaskNotFound("t"))
    ('ValueError: bad', 'KeyError', "unknown task 't'")
    """
    text = str(exception)
    if not isinstance(exception, DaggerError):
        text = f"{type(exception).__name__}: {text}" if text else type(exception).__name__
    return printable(text)
