"""Group commit: publishers and delivery tasks of a bus with ``db=`` share transactions.

Whoever needs its rows stored takes the :class:`Ticket` of the rows pending
now and waits on it. If no write is under way, that waiter writes everything
pending in one transaction; otherwise it waits for the write under way to
end, then either finds its ticket done or writes the next batch itself. So
however many publishers and subscribers wait at once, they cost one
transaction per round, and nobody is woken before the transaction that holds
its rows has committed (or failed: then each of them gets the
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
        self._writing = False
        self._ended: anyio.Event | None = None

    def ticket(self) -> Ticket:
        """The ticket of every row added since the last write took the pending ones."""
        return self._ticket

    async def wait(self, ticket: Ticket, *, message: bool = False) -> None:
        """Return once ``ticket``'s rows are committed; raise its ``StorageError`` if they could not be.

        ``message=True`` for a publisher, whose message may fail alone.
        Shielded: a cancelled waiter still sees its rows' fate decided, so a
        message is either stored and routed or neither.
        """
        if not (ticket.done or self._writing):
            await self._write_pending()  # the common case: no write under way, and no await to cancel
        if not ticket.done:
            with anyio.CancelScope(shield=True):
                await self._wait_shielded(ticket)
        if ticket.error is not None:
            raise ticket.error
        if message and ticket.messages_error is not None:
            raise ticket.messages_error

    async def _wait_shielded(self, ticket: Ticket) -> None:
        while not ticket.done:
            if self._writing:
                if self._ended is None:
                    self._ended = anyio.Event()
                await self._ended.wait()
            else:
                await self._write_pending()

    async def commit(self) -> None:
        """Store every row pending now."""
        await self.wait(self._ticket)

    def flush(self) -> None:
        """Write the pending rows on this thread, unless a write is under way (its writer or the next takes them)."""
        if self._writing or not self._log.pending:
            return
        ticket = self._ticket
        batch = self._begin()
        self._end(batch, ticket, self._write(batch, ticket))
        if ticket.error is not None or ticket.messages_error is not None:
            raise ticket.error or ticket.messages_error  # type: ignore[misc]

    async def _write_pending(self) -> None:
        self._writing = True
        # Let every task that is ready add its rows first: they join this transaction. Not a
        # cancellation point: once a writer is chosen, its write must happen.
        await anyio.lowlevel.cancel_shielded_checkpoint()
        ticket = self._ticket
        batch = self._begin()
        # On the loop's thread: a WAL commit without fsync costs less than the two thread
        # hand-offs it would take to move it off, and every waiter sits behind it either way.
        self._end(batch, ticket, self._write(batch, ticket))

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

    def _begin(self) -> Batch:
        self._writing = True
        self._ticket = Ticket()
        return self._log.take()

    def _end(self, batch: Batch, ticket: Ticket, stored: bool) -> None:
        self._writing = False
        ticket.done = True
        try:
            if stored:
                self._written(batch)
            else:
                self._failed(batch)
        finally:
            if self._ended is not None:
                self._ended.set()
                self._ended = None
