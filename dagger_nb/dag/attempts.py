"""What the scheduler keeps about a node's attempts: abandoned threads and bounded retry messages.

Python cannot stop a thread, so a sync action slower than its node's ``timeout``
keeps running in its thread after the attempt is recorded as timed out. The
next attempt of that node starts only once that thread has returned
(:func:`wait_for_abandoned`): two attempts of one node never run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from time import monotonic
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb.dag.events import NodeWaiting

if TYPE_CHECKING:
    from dagger_nb.dag.actions import Action
    from dagger_nb.dag.report import NodeOutcome
    from dagger_nb.dag.run import Run

#: ``retry_messages`` keeps the first FIRST and the last LAST failed attempts, and counts the rest
FIRST_MESSAGES = 3
LAST_MESSAGES = 5


class AbandonedAttempt:
    """One sync attempt's thread: :attr:`returned` is set on the run's loop once it has returned."""

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.returned = anyio.Event()
        self._loop = asyncio.get_running_loop()

    def track(self, action: Action) -> Action:
        """``action`` whose function reports here when its thread returns."""
        fn = action.fn

        def tracked(**kwargs: Any) -> Any:
            try:
                return fn(**kwargs)
            finally:
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                    self._loop.call_soon_threadsafe(self.returned.set)

        return replace(action, fn=tracked)


async def wait_for_abandoned(run: Run, node_id: str, outcome: NodeOutcome, attempt: int) -> None:
    """Before ``attempt`` of ``node_id``: wait until an abandoned earlier attempt's thread has returned.

    While it waits the node's notes say so and a :class:`NodeWaiting` event is emitted.
    """
    abandoned = run.abandoned.get(node_id)
    if abandoned is None:
        return
    if not abandoned.returned.is_set():
        note = (f"attempt {attempt} waits for attempt {abandoned.attempt}, abandoned after its timeout, "
                "to return from its thread")
        outcome.notes.append(note)
        run.events.emit(NodeWaiting(run.run_id, node_id, abandoned.attempt, note))
        started = monotonic()
        await abandoned.returned.wait()
        outcome.notes[outcome.notes.index(note)] = (
            f"attempt {attempt} started after attempt {abandoned.attempt}, abandoned after its timeout, "
            f"returned from its thread ({monotonic() - started:.2f}s later)"
        )
    del run.abandoned[node_id]


class RetryLog:
    """Appends ``Attempt N failed: ...`` to a node's ``retry_messages``, keeping the first and the
    last few and one line counting those left out, however many attempts there are."""

    def __init__(self, outcome: NodeOutcome) -> None:
        self.messages = outcome.retry_messages
        self.left_out = 0

    def add(self, attempt: int, error: str) -> None:
        """Record that ``attempt`` failed with ``error``."""
        messages = self.messages
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
