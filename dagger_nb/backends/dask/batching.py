"""Calls sent ahead, and the batches that submit a scheduling step's calls to Dask as one graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from dagger_nb.backends.dask._support import LLGExpr, Task, TaskRef, _forget_locals, parse_input

if TYPE_CHECKING:
    from dagger_nb.backends.dask.backend import DaskBackend

@dataclass(slots=True, eq=False)
class Sent:
    """A call made by :meth:`DaskBackend.send`: its Dask future once submitted, None again once
    received or discarded."""

    future: Any
    key: str = ""
    #: the wrapper and its arguments but the key, until the call is submitted
    call: tuple[Any, ...] | None = None
    #: the futures of the calls it waits for, or those calls themselves while in the same batch
    upstream: tuple[Any, ...] = ()
    #: submitted in one graph with other calls
    in_graph: bool = False
    #: why it could not be submitted: :meth:`DaskBackend.receive` raises :class:`NotSentAhead` with it
    missed: str | None = None


class SendBatch:
    """Calls :meth:`DaskBackend.send` made in one ``with`` block, submitted together when it ends.

    Each ``client.submit`` is one graph update for the scheduler, which hands
    every update to a thread and back; a fan-out's thousand children sent in one
    step go in one update instead, as the same tasks under the same keys. The
    block is synchronous (no ``await`` inside), so no call of a batch can be
    received, cancelled or discarded before the batch is submitted.
    """

    def __init__(self, backend: DaskBackend) -> None:
        self._backend = backend
        self.calls: list[Sent] = []

    def __enter__(self) -> SendBatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.submit()

    def submit(self) -> None:
        """Submit the calls sent so far (as one graph when there are several), and start anew."""
        calls, sent_so_far, self.calls = [], self.calls, []
        in_batch: set[Sent] = set()
        for sent in sent_so_far:  # in the order sent: a call comes after those it waits for
            # (those already submitted are futures here): one not in the batch missed
            if any(isinstance(call, Sent) and call not in in_batch for call in sent.upstream):
                _miss(sent, "a call it waits for could not be submitted")
            else:
                calls.append(sent)
                in_batch.add(sent)
        if len(calls) > 1 and LLGExpr is not None:
            if self._submit_graph(calls):
                return
            for sent in calls:  # the client registered the graph's keys before it failed: new ones
                sent.key = self._backend._new_key(sent.key.rpartition("-")[0])
        for sent in calls:
            _submit_alone_or_miss(self._backend, sent)

    def _submit_graph(self, calls: list[Sent]) -> bool:
        """Submit ``calls`` as one graph; False if the client cannot (say, an input does not pickle)."""
        try:
            futures = self._backend.client.get(
                _graph(calls), [sent.key for sent in calls], sync=False, fifo_timeout="100 ms"
            )
        except Exception as error:  # each call alone then, so that only the culprit misses
            _forget_locals(error)
            return False
        for sent, future in zip(calls, futures, strict=True):
            sent.future, sent.in_graph = future, True
            sent.call, sent.upstream = None, ()
        return True


def _graph(calls: list[Sent]) -> Any:
    """The tasks Client.submit would make for ``calls``, as one graph; a call waiting for another
    in the graph names its key."""
    tasks = {}
    for sent in calls:
        assert sent.call is not None
        runner, *arguments = sent.call
        upstream = (TaskRef(call.key) if isinstance(call, Sent) else call for call in sent.upstream)
        tasks[sent.key] = Task(sent.key, runner, sent.key, *map(parse_input, arguments), *map(parse_input, upstream))
    # A random token, as Client.submit gives: tokenizing the graph would pickle every action.
    return LLGExpr(tasks, _determ_token=uuid4().hex)


def _submit_alone_or_miss(backend: DaskBackend, sent: Sent) -> None:
    """Submit ``sent`` alone; if that fails, it is a miss: its node is sent anew when its turn comes
    (and fails then, with its actual inputs, if they are the cause). The error is kept as text:
    its traceback would hold the call's inputs, and the batch's."""
    try:
        backend._submit_alone(sent)
    except Exception as error:
        _forget_locals(error)
        _miss(sent, f"it could not be submitted: {error}")


def _miss(sent: Sent, why: str) -> None:
    sent.missed = why
    sent.call, sent.upstream = None, ()



#: ``(argument, upstream node id, the node's declared outputs, output name)``
Pick = tuple[str, str, tuple[str, ...], str]
#: a pick as sent: ``(argument, position of the upstream result, node id, declared outputs, output name)``
_Pick = tuple[str, int, str, tuple[str, ...], str]

