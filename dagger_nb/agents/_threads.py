"""The sync agents' worker threads running in this process, so no task ever runs twice at once.

A sync agent runs in a worker thread, which cannot be stopped. When its
attempt ends without it (a timeout, a cancelled job, a manager whose file a
later one took over), the thread is abandoned and runs on; the task's next
attempt must not start before it has returned. That next attempt may belong to
another job run, or to another :class:`TaskManager` instance on the same file
(a re-run notebook cell), so the record is kept per process, keyed by
``(file, job id, task id)``: the file's identity (device and inode, so a link
to it is the same file), or for a manager without a database an object of its
own.

A call is recorded from the moment it is handed to the thread pool (a call
queued for a thread, not started yet, would otherwise slip past a check made
in between) until it returns, or until its attempt ended before a thread took
it up (then it never runs).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

from dagger_nb._loop import call_soon_on

ThreadKey = tuple[Hashable, str, str]

_Listener = Callable[[], None]


class LiveThreads:
    """The running (or queued) sync agent calls of this process, by :data:`ThreadKey`."""

    __slots__ = ("_live", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: key -> [calls running or queued, listeners to call when the last one returns]
        self._live: dict[ThreadKey, tuple[list[int], list[_Listener]]] = {}

    def begin(self, key: ThreadKey) -> None:
        """A call of ``key`` is handed to a thread."""
        with self._lock:
            entry = self._live.get(key)
            if entry is None:
                self._live[key] = ([1], [])
            else:
                entry[0][0] += 1

    def end(self, key: ThreadKey) -> None:
        """A call of ``key`` returned (or will never start): tell the listeners if it was the last."""
        with self._lock:
            entry = self._live.get(key)
            if entry is None:
                return
            entry[0][0] -= 1
            if entry[0][0] > 0:
                return
            del self._live[key]
        for listener in entry[1]:
            listener()

    def wait_for(self, key: ThreadKey, listener: Callable[[], _Listener]) -> bool:
        """True when a call of ``key`` runs: ``listener()``'s result is called once the last
        one returned (from that thread). False, and nothing registered, when none runs."""
        if key not in self._live:  # the common case, read without the lock
            return False
        with self._lock:
            entry = self._live.get(key)
            if entry is None:
                return False
            entry[1].append(listener())
            return True

    def __contains__(self, key: object) -> bool:
        return key in self._live


#: The one record of this process.
LIVE_THREADS = LiveThreads()


def file_identity(path: str) -> Hashable:
    """The file's identity: ``(device, inode)``, the same through any link; its real path if
    it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (status.st_dev, status.st_ino)


def on_this_loop(fn: Callable[[Any], object], argument: Any) -> _Listener:
    """A listener that runs ``fn(argument)`` on the calling thread's event loop (jobs run on
    asyncio, as all of dagger-nb's loop work: :mod:`dagger_nb._loop`), without waiting for it
    (nothing, if that loop is closed by then: nobody waits any more)."""
    return partial(call_soon_on, asyncio.get_running_loop(), fn, argument)
