"""The handle :meth:`PubSub.start` returns for delivery running in the background."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from dagger_nb.pubsub.bus import PubSub
    from dagger_nb.pubsub.events import PubSubEvent


class PubSubHandle:
    """Background delivery on the caller's event loop: await it, stop it, watch its events.

    ``status`` is ``running``, then ``stopped`` (by :meth:`stop` or its
    timeout), ``cancelled`` or ``failed`` (``error`` holds the exception).
    """

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.status = "running"
        self.error: BaseException | None = None
        self._finished = anyio.Event()
        self._task: asyncio.Task[None] | None = None

    def _start(self, loop: asyncio.AbstractEventLoop, run: Coroutine[Any, Any, None]) -> None:
        # The root of the background work: an asyncio task on the caller's loop
        # that owns the run, whose task group owns every delivery task.
        self._task = loop.create_task(self._host(run), name="dagger-nb pubsub")

    async def _host(self, run: Coroutine[Any, Any, None]) -> None:
        try:
            await run
            self.status = "stopped"
        except anyio.get_cancelled_exc_class():
            self.status = "cancelled"
            raise
        except BaseException as error:
            self.status = "failed"
            self.error = error
        finally:
            self._finished.set()

    @property
    def done(self) -> bool:
        """True once delivery has ended."""
        return self._finished.is_set()

    def stop(self) -> None:
        """Stop delivery (see :meth:`PubSub.stop`)."""
        self.pubsub.stop()

    def cancel(self) -> None:
        """Same as :meth:`stop`."""
        self.stop()

    async def wait(self) -> None:
        """Wait until delivery ends; re-raise the error that ended it, if any."""
        await self._finished.wait()
        if self.error is not None:
            raise self.error

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    def subscribe(self) -> AsyncIterator[PubSubEvent]:
        """The bus's events, past ones first (see :meth:`PubSub.subscribe_events`)."""
        return self.pubsub.subscribe_events()

    def __repr__(self) -> str:
        return f"<PubSubHandle {self.status}>"
