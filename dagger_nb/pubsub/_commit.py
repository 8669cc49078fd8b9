"""Group commit: publishers and delivery tasks of a bus with ``db=`` share transactions.

Whoever needs its rows stored takes the :class:`Ticket` of the rows pending
now, yields once, and then, unless another waiter got there first, writes
everything pending in one transaction on the loop's thread. Every task that
was ready in the same tick of the event loop has added its rows by then, so
however many publishers and subscribers wait at once, they cost one
transaction per tick and a single yield each: no events, no cancel scopes,
no thread hand-offs. Nobody goes on before the transaction that holds its
rows has committed (or failed: then each of them gets the
:class:`~dagger_nb.errors.StorageError`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from dagger_nb.errors import StorageError

if TYPE_CHECKING:
    from dagger_nb.pubsub.store import Batch, MessageLog


class Ticket:
    """The fate of one batch of rows: ``done`` once written or failed.

    ``error`` is set when none of its rows could be stored; ``messages_error``
    when only its messages could not (the outcomes and registrations were
    stored in a second transaction without them).
    """

    __slots__ = ("done", "error", "messages_error")

    def __init__(self) -> None:
        self.done = False
        self.error: StorageError | None = None
        self.messages_error: StorageError | None = None


class GroupCommit:
    """Writes ``log``'s pending rows in shared transactions, calling ``written`` or ``failed`` after each."""

    def __init__(
        self,
        log: MessageLog,
        *,
        written: Callable[[Batch], None],
        failed: Callable[[Batch], None],
    ) -> None:
        self._log = log
        self._written = written
        self._failed = failed
        self._ticket = Ticket()

    async def wait(self, ticket: Ticket, *, message: bool = False) -> None:
        """Return once ``ticket``'s rows are committed; raise its ``StorageError`` if they could not be.

        ``message=True`` for a publisher, whose message may fail alone. The
        waiter yields once, so every task that is ready adds its rows first;
        then whoever of them runs first writes them all. A waiter cancelled
        during that yield writes before it leaves: its rows' fate is decided
        either way, so a message is either stored and routed or neither.
        """
        if not ticket.done:
            try:
                await anyio.sleep(0)
            finally:
                if not ticket.done:
                    self._write_pending()
        if ticket.error is not None:
            raise ticket.error
        if message and ticket.messages_error is not None:
            raise ticket.messages_error

    async def commit(self, *, message: bool = False) -> None:
        """Store every row pending now (``message`` as for :meth:`wait`)."""
        await self.wait(self._ticket, message=message)

    def flush(self) -> None:
        """Write the pending rows now, on this thread, and raise the error if that fails."""
        if not self._log.pending:
            return
        ticket = self._write_pending()
        if ticket.error is not None or ticket.messages_error is not None:
            raise ticket.error or ticket.messages_error  # type: ignore[misc]

    def _write_pending(self) -> Ticket:
        # On the loop's thread: a WAL commit without fsync costs less than the two thread
        # hand-offs it would take to move it off, and every waiter sits behind it either way.
        ticket, self._ticket = self._ticket, Ticket()
        batch = self._log.take()
        stored = self._write(batch, ticket)
        ticket.done = True
        if stored:
            self._written(batch)
        else:
            self._failed(batch)
        return ticket

    def _write(self, batch: Batch, ticket: Ticket) -> bool:
        """Write ``batch``; if that fails, its other rows without its messages. True if the messages were stored."""
        try:
            self._log.write(batch)
            return True
        except StorageError as error:
            if not batch.messages:
                ticket.error = error
                return False
            ticket.messages_error = error
        try:
            self._log.write(batch.without_messages())
        except StorageError as error:
            ticket.error = error
        return False
