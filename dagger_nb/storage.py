"""SQLite plumbing shared by the executor, the task manager and pub/sub.

Every database is opened in WAL mode with ``synchronous=NORMAL``: a committed
transaction survives a crash of the process (what the task manager promises),
and readers never block the writer. :class:`ProcessLock` lets one live process
at a time write to a file, so a second manager gets a clear error instead of
interleaving its writes with the first one's.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from dagger_nb.errors import DatabaseInUse, StorageError

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")


def open_database(path: str | os.PathLike[str], *, schema: str = "") -> sqlite3.Connection:
    """Open (creating if needed) the SQLite file at ``path`` with our pragmas and ``schema``.

    The connection may be used from worker threads (one at a time), so blocking
    writes can be moved off the event loop.
    """
    target = _existing_folder(path)
    try:
        connection = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as error:
        raise StorageError(f"cannot open database '{target}': {error}") from error
    try:
        for pragma in PRAGMAS:
            connection.execute(pragma)
        if schema:
            connection.executescript(schema)
    except sqlite3.DatabaseError as error:
        connection.close()
        raise StorageError(f"cannot open database '{target}': {error}") from error
    return connection


def add_missing_columns(connection: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Upgrade a file written by an older version: add each of ``columns`` (name: SQL type)
    that ``table`` lacks, in one transaction. Existing rows get NULL there."""
    present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
    missing = [(name, kind) for name, kind in columns.items() if name not in present]
    if missing:
        with connection:  # commits, or rolls back on an error, the transaction begun explicitly
            connection.execute("BEGIN IMMEDIATE")  # our connections are in autocommit mode
            for name, kind in missing:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _existing_folder(path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise StorageError(f"cannot open database '{target}': folder '{target.parent}' does not exist")
    return target


class ProcessLock:
    """An exclusive advisory lock on ``<path>.lock`` held while the owner lives.

    The operating system releases it when the process dies, even by SIGKILL, so
    a crashed process never locks its successor out.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(_existing_folder(path))
        try:
            self._file = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held for the lock's life
        except OSError as error:
            raise StorageError(f"cannot open database '{self.path}': {error.strerror or error}") from None
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise DatabaseInUse(self.path) from None

    def release(self) -> None:
        """Give the lock up; safe to call twice."""
        if not self._file.closed:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
