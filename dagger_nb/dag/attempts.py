"""What the scheduler keeps about a node's attempts: abandoned threads and bounded retry messages.

Python cannot stop a thread, so a sync action slower than its node's ``timeout``
keeps running in its thread after the attempt is recorded as timed out. The
next attempt of that node starts only once that thread has returned
(:func:`wait_for_abandoned`): two attempts of one node never run at once. The
threads are known per process, by run store file, run and node, so this also
holds when a later executor takes the file over (a re-run notebook cell) and
resumes the run, on the same event loop or another.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import replace
from time import monotonic
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb._loop import call_soon_on
from dagger_nb.dag.events import NodeWaiting

if TYPE_CHECKING:
    from dagger_nb.dag.actions import Action
    from dagger_nb.dag.report import NodeOutcome
    from dagger_nb.dag.run import Run

#: ``retry_messages`` keeps the first FIRST and the last LAST failed attempts, and counts the rest
FIRST_MESSAGES = 3
LAST_MESSAGES = 5

#: (run store file or "", run id, node id) -> the abandoned attempt whose thread still runs
_abandoned: dict[tuple[str, str, str], AbandonedAttempt] = {}
_abandoned_lock = threading.Lock()


class AbandonedAttempt:
    """One sync attempt's thread; :meth:`wait` returns once it has returned (from any event loop)."""

    def __init__(self, attempt: int, *, drive: object = None) -> None:
        self.attempt = attempt
        #: the start of the run it belongs to (``Run.drive``: a resume numbers attempts from 1 again)
        self.drive = drive
        self._returned = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, anyio.Event]] = []
        self._keys: list[tuple[str, str, str]] = []

    @property
    def has_returned(self) -> bool:
        """Its thread has returned."""
        return self._returned.is_set()

    async def wait(self) -> None:
        """Return once the thread has returned."""
        if self._returned.is_set():
            return
        event = anyio.Event()
        with _abandoned_lock:
            if self._returned.is_set():
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()

    def track(self, action: Action) -> Action:
        """``action`` whose function reports here when its thread returns."""
        fn = action.fn

        def tracked(**kwargs: Any) -> Any:
            try:
                return fn(**kwargs)
            finally:
                self._thread_returned()

        return replace(action, fn=tracked)

    def _thread_returned(self) -> None:
        with _abandoned_lock:
            self._returned.set()
            waiters, self._waiters = self._waiters, []
            for key in self._keys:
                if _abandoned.get(key) is self:
                    del _abandoned[key]
        for loop, event in waiters:
            call_soon_on(loop, event.set)


class AbandonedThreads(MutableMapping[str, AbandonedAttempt]):
    """A run's view of the process's abandoned attempts, by node id (``Run.abandoned``).

    Keyed by the run's store file too (``Run.store_file``), so a run resumed by another executor
    of this process sees the threads of the one it took over from.
    """

    def __init__(self, run: Run) -> None:
        self._run = run

    def _key(self, node_id: str) -> tuple[str, str, str]:
        return (self._run.store_file, self._run.run_id, node_id)

    def __getitem__(self, node_id: str) -> AbandonedAttempt:
        with _abandoned_lock:
            return _abandoned[self._key(node_id)]

    def __setitem__(self, node_id: str, attempt: AbandonedAttempt) -> None:
        key = self._key(node_id)
        with _abandoned_lock:
            if attempt._returned.is_set():
                return
            attempt._keys.append(key)
            _abandoned[key] = attempt

    def __delitem__(self, node_id: str) -> None:
        with _abandoned_lock:
            _abandoned.pop(self._key(node_id), None)

    def __contains__(self, node_id: object) -> bool:
        if not _abandoned or not isinstance(node_id, str):  # asked for every attempt; almost always empty
            return False
        with _abandoned_lock:
            return self._key(node_id) in _abandoned

    def __iter__(self) -> Iterator[str]:
        prefix = self._key("")[:2]
        with _abandoned_lock:
            return iter([key[2] for key in _abandoned if key[:2] == prefix])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def store_file(path: str | None) -> str:
    """How abandoned attempts name a run store file: its resolved path ("" without a store)."""
    return os.path.realpath(path) if path is not None else ""


async def wait_for_abandoned(run: Run, node_id: str, outcome: NodeOutcome, attempt: int) -> None:
    """Before ``attempt`` of ``node_id``: wait until an abandoned earlier attempt's thread has returned.

    While it waits the node's notes say so and a :class:`NodeWaiting` event is emitted.
    """
    abandoned = run.abandoned.get(node_id)
    if abandoned is None:
        return
    if not abandoned.has_returned:
        if abandoned.drive is run.drive and abandoned.attempt < attempt:
            earlier = f"attempt {abandoned.attempt}"
        else:  # an attempt of an earlier start of the run (before a resume), numbered on its own
            earlier = f"attempt {abandoned.attempt} of the run's previous start"
        note = f"attempt {attempt} waits for {earlier}, abandoned after its timeout, to return from its thread"
        outcome.add_note(note)
        run.events.emit(NodeWaiting(run.run_id, node_id, abandoned.attempt, note))
        started = monotonic()
        await abandoned.wait()
        outcome.notes[outcome.notes.index(note)] = (
            f"attempt {attempt} started after {earlier}, abandoned after its timeout, "
            f"returned from its thread ({monotonic() - started:.2f}s later)"
        )
    del run.abandoned[node_id]


class RetryLog:
    """Appends ``Attempt N failed: ...`` to a node's ``retry_messages``, keeping the first and the
    last few and one line counting those left out, however many attempts there are."""

    __slots__ = ("left_out", "outcome")  # one per node run

    def __init__(self, outcome: NodeOutcome) -> None:
        self.outcome = outcome
        self.left_out = 0

    def add(self, attempt: int, error: str) -> None:
        """Record that ``attempt`` failed with ``error``."""
        messages = self.outcome.retry_messages
        if type(messages) is not list:  # the shared empty one: this node's own, from now on
            messages = self.outcome.retry_messages = []
        messages.append(f"Attempt {attempt} failed: {error}")
        if len(messages) > FIRST_MESSAGES + LAST_MESSAGES + (1 if self.left_out else 0):
            if self.left_out:
                del messages[FIRST_MESSAGES + 1]
            else:
                del messages[FIRST_MESSAGES]
            self.left_out += 1
            summary = f"... {plural(self.left_out, 'more attempt')} failed (not shown)"
            if self.left_out == 1:
                messages.insert(FIRST_MESSAGES, summary)
            else:
                messages[FIRST_MESSAGES] = summary


def plural(count: int, noun: str) -> str:
    """``1 attempt``, ``2 attempts``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
