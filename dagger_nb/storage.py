"""SQLite plumbing shared by the executor, the task manager and pub/sub.

Every database is opened in WAL mode with ``synchronous=NORMAL``: a committed
transaction survives a crash of the process (what the task manager promises),
and readers never block the writer. :class:`ProcessLock` lets one live process
at a time write to a file, so a second manager gets a clear error instead of
interleaving its writes with the first one's; within one process, a new store
on a file takes it over from the earlier one (a re-run notebook cell).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from dagger_nb.errors import DaggerWarning, DatabaseInUse, StorageError

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


_FileKey = tuple[int, int]  # (st_dev, st_ino): the file itself, whatever path leads to it

# The lock held on each file by this process. A lock's descriptor is opened just before it
# is taken and closed once it is given up, after its store closed its SQLite connections:
# closing any descriptor of a file drops every POSIX lock this process holds on it, and
# those are SQLite's own (another process's connection checks them before deleting the WAL).
_holders: dict[_FileKey, ProcessLock] = {}
_registry_guard = threading.Lock()  # guards _holders; never held while calling out
_acquiring = threading.RLock()  # one acquisition (take-over included) at a time


class ProcessLock:
    """An exclusive lock on the database file at ``path``, held while its owner lives.

    The lock is an ``flock`` on the file itself (created if missing), so a
    symlink or a hard link to a held file meets the same lock. SQLite's own
    locks are POSIX record locks, which do not conflict with it: connections to
    the file keep working while it is held. The operating system releases it
    when the process dies, even by SIGKILL, so a crashed process never locks
    its successor out.

    Held by another live process: :class:`DatabaseInUse` naming that process's
    PID. Held by an earlier instance in this process (a re-run notebook cell):
    the earlier holder's ``on_takeover()`` is called to close its store cleanly,
    a :class:`DaggerWarning` says so, and the lock passes to the new one. So an
    instance never released keeps the file (and stays reachable) until a later
    one takes it over or the process ends. ``owner`` is a short noun for these
    messages ("TaskManager", "PubSub").
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        owner: str,
        on_takeover: Callable[[], None] | None = None,
    ) -> None:
        self.path = str(_existing_folder(path))
        self.owner = owner
        self._on_takeover = on_takeover
        self._released = False
        with _acquiring:
            self._fd = _open_file(self.path)
            try:
                status = os.fstat(self._fd)
                self._key = (status.st_dev, status.st_ino)
                self._take_from_earlier_holder()
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    resolved = os.path.realpath(self.path)
                    pid = _holder_pid(self._key, resolved)
                    raise DatabaseInUse(self.path, pid=pid, resolved=resolved) from None
            except BaseException:
                self._released = True
                os.close(self._fd)
                raise
            with _registry_guard:
                _holders[self._key] = self
            _write_pid_note(self.path, self._key)

    def _take_from_earlier_holder(self) -> None:
        with _registry_guard:
            earlier = _holders.get(self._key)
        if earlier is not None:
            earlier._hand_over()
            warnings.warn(
                f"{self.owner} took over '{self.path}' from an earlier {earlier.owner} in this "
                "process; the earlier one was closed",
                DaggerWarning,
                stacklevel=_outside_the_package(),
            )

    @property
    def held(self) -> bool:
        """Whether this instance still holds the lock (False once released or taken over)."""
        return not self._released

    def release(self) -> None:
        """Give the lock up; safe to call twice, and after a take-over."""
        with _registry_guard:
            if self._released:
                return
            self._released = True
            if _holders.get(self._key) is not self:
                return
            del _holders[self._key]
            _remove_pid_note(self.path, self._key)
            os.close(self._fd)  # gives the flock up (this was its only descriptor)

    def _hand_over(self) -> None:
        """Close the store holding this lock (its ``on_takeover``), then release the lock."""
        try:
            if self._on_takeover is not None:
                self._on_takeover()
        except Exception as error:  # the new owner gets the file either way
            warnings.warn(
                f"closing the earlier {self.owner} on '{self.path}' failed: {error!r}",
                DaggerWarning,
                stacklevel=_outside_the_package(),
            )
        finally:
            self.release()


def _outside_the_package() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside dagger_nb (the
    user's cell), however deep inside the package the lock was taken."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _open_file(path: str) -> int:
    """A new descriptor on the database file at ``path`` (created if missing, links followed)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise StorageError(f"cannot open database '{path}': {error.strerror or error}") from None


_LOCK_TABLE = "/proc/locks"  # Linux: every flock with its holder's PID and file


def _pid_note_path(path: str) -> str:
    return os.path.realpath(path) + ".lock"


def _write_pid_note(path: str, key: _FileKey) -> None:
    """Leave this process's PID beside the file, for systems without ``/proc/locks``."""
    try:
        with open(_pid_note_path(path), "w", encoding="ascii") as note:
            note.write(f"{os.getpid()} {key[0]} {key[1]}\n")
    except OSError:
        pass  # only an error message's detail depends on it


def _remove_pid_note(path: str, key: _FileKey) -> None:
    note = _pid_note_path(path)
    if _read_pid_note(note, key) == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(note)


def _read_pid_note(note: str, key: _FileKey) -> int | None:
    try:
        with open(note, encoding="ascii") as handle:
            pid, device, inode = (int(field) for field in handle.read().split())
    except (OSError, ValueError):
        return None
    return pid if (device, inode) == key else None


def _holder_pid(key: _FileKey, resolved: str) -> int | None:
    """The PID of the process holding the flock on the file ``key``, when it can be known."""
    device = f"{os.major(key[0]):02x}:{os.minor(key[0]):02x}:{key[1]}"
    try:
        with open(_LOCK_TABLE, encoding="ascii") as table:
            for line in table:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 8445 fe:00:2147684 0 EOF"; blocked waiters are "->"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and int(fields[4]) > 0:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    noted = _read_pid_note(resolved + ".lock", key)
    return noted if noted is not None and _alive(noted) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget_parent_locks() -> None:
    """In a forked child: the inherited descriptors share the parent's locks, so drop them
    and open fresh ones when this process takes a lock of its own."""
    for holder in _holders.values():
        holder._released = True
        with contextlib.suppress(OSError):
            os.close(holder._fd)
    _holders.clear()


os.register_at_fork(after_in_child=_forget_parent_locks)
