"""The handle a caller holds on a DAG run (:class:`RunHandle`), and the context that says which node adds nodes.

Separate from :mod:`dagger_nb.dag.run`, which holds the run's state, because the handle is the caller's
side of a run: read-only views, waiting, answering questions and adding nodes from any thread. It needs
only :class:`~dagger_nb.dag.run.Run`'s attributes, so it imports :mod:`dagger_nb.dag.run` for annotations
only, and ``run`` re-exports every name here.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb.dag.dynamic import node_request
from dagger_nb.dag.report import RunStatus
from dagger_nb.errors import QuestionNotFound

if TYPE_CHECKING:
    from dagger_nb.dag.events import DagEvent
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.human import HumanRequest
    from dagger_nb.dag.report import ExecutionReport
    from dagger_nb.dag.run import Run
    from dagger_nb.dag.spec import WorkflowSpec
    from dagger_nb.events import EventStream

#: the node whose action is running in this context: nodes it adds are its additions (see Run.added_by)
ADDING_NODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("dagger_adding_node", default=None)


class RunHandle:
    """A run started in the background with :meth:`DagExecutor.start`.

    ``await handle`` (or ``await handle.wait()``) gives the :class:`ExecutionReport`;
    ``handle.subscribe()`` yields its events, past ones first. It satisfies
    :class:`dagger_nb.handles.Handle`, as the other paradigms' handles do.
    """

    def __init__(self, run: Run, executor: DagExecutor) -> None:
        self._run = run
        self._executor = executor
        # What this handle shows once its run has let go of its values (Run.release_values).
        self._report: ExecutionReport | None = None
        self._events: EventStream[DagEvent] | None = None
        if run.released:
            self._report = run.full_report()
        else:
            run._handles.add(self)

    def _keep(self, report: ExecutionReport, events: EventStream[DagEvent]) -> None:
        self._report, self._events = report, events

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._run.run_id

    @property
    def workflow(self) -> str:
        """The workflow's name."""
        return self._run.spec.name

    @property
    def spec(self) -> WorkflowSpec:
        """The workflow being run."""
        return self._run.spec

    @property
    def status(self) -> RunStatus:
        """``pending``, ``running``, ``succeeded``, ``failed``, ``paused``, ``cancelled`` or
        ``interrupted`` (a stored run whose process died): a :class:`RunStatus`."""
        return RunStatus(self._run.status)

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the run as a whole (a :class:`StorageError` when its run store
        failed, or what broke it before it could record its end), else None. A node's failure is
        in its outcome and the report's ``error`` text."""
        failure = self._run.storage_failure or self._run.failure
        return None if failure is None or self._run.cancel_requested else failure

    @property
    def report(self) -> ExecutionReport | None:
        """The final report, or None while the run goes on."""
        return self._report or self._run.report

    @property
    def done(self) -> bool:
        """True once the run has ended."""
        return self._run.report is not None

    def snapshot(self) -> ExecutionReport:
        """The run as it is now, for dashboards."""
        return self._report or self._run.snapshot()

    def cancel(self) -> None:
        """Cancel the run; it ends ``cancelled`` promptly."""
        self._run.cancel()

    def subscribe(self) -> AsyncIterator[DagEvent]:
        """Every event of the run: past ones first, then live ones until it ends."""
        return (self._events or self._run.events).subscribe()

    def add_listener(self, listener: Callable[[DagEvent], object]) -> None:
        """Call ``listener(event)`` synchronously for each future event."""
        self._run.events.add_listener(listener)

    def follow(self, listener: Callable[[DagEvent], object]) -> None:
        """Like :meth:`add_listener`, and the listener stays on when the run is resumed (dashboards)."""
        self._run.followers.append(listener)
        self._run.events.add_listener(listener)

    async def wait(self) -> ExecutionReport:
        """Wait for the end of the run and return its report."""
        if self._run.report is None:
            if self._run.done is None:
                self._run.done = anyio.Event()
            await self._run.done.wait()
        assert self._run.report is not None
        for callback in self._run.waited_callbacks:
            callback()
        return self._report or self._run.report

    def add_node(
        self,
        action: str,
        *,
        id: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        dependencies: Iterable[str] = (),
        outputs: Iterable[str] = (),
        timeout: float | None = None,
        try_count: int | None = None,
    ) -> str:
        """Add a node to the running workflow; returns its id (``<action>_<n>`` when not given).

        ``inputs`` maps input names to a reference (``"inputs.KEY"``, ``"NODE.OUTPUT"``) or a
        literal ``{"value": ...}``. Raises :class:`GraphChangeError` naming what is wrong.
        """
        request = node_request(action, id=id, inputs=inputs, dependencies=dependencies, outputs=outputs,
                               timeout=timeout, try_count=try_count)
        return self.add_nodes([request])[0]

    def add_nodes(self, requests: list[Mapping[str, Any]]) -> list[str]:
        """Add several nodes at once, all or none; each mapping holds :meth:`add_node`'s arguments."""
        return self._run.hop.call(self._executor._grow, self._run, requests, ADDING_NODE.get())

    def questions(self) -> list[HumanRequest]:
        """The questions the run is waiting for a person to answer."""
        return list(self._run.questions.values())

    def respond(self, request_id: str, value: Any) -> None:
        """Answer question ``request_id``; an answer that does not match its schema raises
        :class:`SchemaValidationError` and the question stays open, an unknown (or already
        answered) ``request_id`` raises :class:`QuestionNotFound`."""
        request = self._run.questions.get(request_id)
        if request is None:
            raise QuestionNotFound(self.run_id, request_id, self._run.questions)
        request.answer(value)

    def add_waited_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` in the waiting task each time :meth:`wait` returns.

        A notebook dashboard uses it to re-send its final state from the cell
        that awaited the run, where headless runners record it.
        """
        self._run.waited_callbacks.append(callback)

    def __await__(self) -> Generator[Any, None, ExecutionReport]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        return f"<RunHandle {self.workflow!r} run {self.run_id}: {self.status}>"
