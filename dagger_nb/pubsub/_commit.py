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
    """The fate of one batch of rows: ``done`` once written or failed, ``error`` if it failed."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: StorageError | None = None


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

    async def wait(self, ticket: Ticket) -> None:
        """Return once ``ticket``'s rows are committed; raise its ``StorageError`` if they could not be.

        Shielded: a cancelled waiter still sees its rows' fate decided, so a
        message is either stored and routed or neither.
        """
        with anyio.CancelScope(shield=True):
            while not ticket.done:
                if self._writing:
                    if self._ended is None:
                        self._ended = anyio.Event()
                    await self._ended.wait()
                else:
                    await self._write_pending()
        if ticket.error is not None:
            raise ticket.error

    async def commit(self) -> None:
        """Store every row pending now."""
        await self.wait(self._ticket)

    def flush(self) -> None:
        """Write the pending rows on this thread, unless a write is under way (its writer or the next takes them)."""
        if self._writing or not self._log.pending:
            return
        ticket = self._ticket
        batch = self._begin()
        try:
            self._log.write(batch)
        except StorageError as error:
            self._end(batch, ticket, error)
            raise
        self._end(batch, ticket, None)

    async def _write_pending(self) -> None:
        self._writing = True
        # Let every task that is ready add its rows first: they join this transaction.
        await anyio.lowlevel.checkpoint()
        ticket = self._ticket
        batch = self._begin()
        error: StorageError | None = None
        try:
            # On the loop's thread: a WAL commit without fsync costs less than the two thread
            # hand-offs it would take to move it off, and every waiter sits behind it either way.
            self._log.write(batch)
        except StorageError as failure:
            error = failure
        finally:
            self._end(batch, ticket, error)

    def _begin(self) -> Batch:
        self._writing = True
        self._ticket = Ticket()
        return self._log.take()

    def _end(self, batch: Batch, ticket: Ticket, error: StorageError | None) -> None:
        self._writing = False
        ticket.error = error
        ticket.done = True
        try:
            if error is None:
                self._written(batch)
            else:
                self._failed(batch)
        finally:
            if self._ended is not None:
                self._ended.set()
                self._ended = None
