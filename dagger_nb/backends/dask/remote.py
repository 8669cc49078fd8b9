"""A result left on the cluster: what the notebook's cache holds until somebody reads it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from dagger_nb.cache import Deferred


class ClusterValue(Deferred):
    """The result of one task, kept in its worker's memory; fetched on first access, once.

    A worker keeps a result there when nothing in the notebook asked for it and
    it is too big to come pushed with the task's end (see ``worker.py``). The
    cache stores this handle; reading the value (``cache.get``, ``to_frame``, a
    node that runs in the notebook) fetches it, thread-safely and only once, and
    lets go of the future, so the cluster frees the task's memory. A node that
    runs on the same cluster receives the future instead, and the value moves
    between workers, never through the notebook.
    """

    __slots__ = ("_client", "_future", "_key", "_lock", "_value")

    def __init__(self, client: Any, future: Any) -> None:
        self._client = client
        self._future: Any = future
        self._key: str = future.key
        self._lock = threading.Lock()
        self._value: Any = None

    @property
    def fetched(self) -> bool:
        """True once the value is here."""
        return self._future is None

    def future_on(self, client: Any) -> Any:
        """The task's future (its value is the worker's ``_Done``) if ``client`` can hand it to a
        task and the value is not here yet; else None."""
        future = self._future
        return future if future is not None and client is self._client else None

    def fetch(self) -> Any:
        """The value, gathered from its worker on the first call (from any thread but the loop the
        Dask client runs on, which the gather needs)."""
        with self._lock:
            if self._future is not None:
                if _on_loop_of(self._client):
                    raise RuntimeError(
                        f"task {self._key}'s result is on the cluster and cannot be fetched on the event loop its "
                        "Dask client runs on: read it from another thread (await anyio.to_thread.run_sync(...)) "
                        "or with a synchronous Client"
                    )
                done = self._client.gather(self._future, asynchronous=False)
                self._value, self._future = done.result, None
            return self._value

    def __repr__(self) -> str:
        if self._future is None:
            return f"ClusterValue({self._value!r})"
        return f"<ClusterValue of task {self._key}: on the cluster, fetched on access>"


def _on_loop_of(client: Any) -> bool:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return running is client.loop.asyncio_loop
