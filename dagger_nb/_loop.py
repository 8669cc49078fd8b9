"""Where dagger-nb's async work runs, for all three paradigms.

One module answers the questions every facade (``DagExecutor``, ``TaskManager``,
``PubSub``, the Dask backend) asks about the event loop:

* :func:`require_loop`: is a loop running here? If not, one error message that
  names the synchronous form to use instead.
* :class:`BackgroundGroup`: who owns work started from synchronous code with
  ``x.start(...)``: one long-lived task per loop holding an anyio task group, so
  every background run is awaited or cancelled by someone.
* :class:`LoopHop`: how a worker thread (a synchronous action, agent or handler)
  calls something that must run on the loop's thread; :func:`call_soon_on` and
  :func:`submit_to` for a loop known by itself (a job's, a Dask client's).
* :func:`run_sync`: how ``x.run_sync(...)`` blocks: ``anyio.run`` in a script;
  inside a running loop (a Jupyter kernel) a private loop in a worker thread,
  in a copy of the caller's context, with a kernel interrupt cancelling the work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup

from dagger_nb.errors import NoRunningLoop

T = TypeVar("T")

logger = logging.getLogger("dagger_nb")

__all__ = ["BackgroundGroup", "LoopHop", "call_soon_on", "loop_is_running", "require_loop", "run_sync", "submit_to"]


def loop_is_running() -> bool:
    """True when the calling thread is running an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def require_loop(what: str, *, instead: str) -> asyncio.AbstractEventLoop:
    """The calling thread's running loop; :class:`NoRunningLoop` naming ``instead`` when there is none.

    ``what`` is the call that needs the loop (``"DagExecutor.start()"``), ``instead``
    the synchronous form to use in a script (``"run_sync()"``).
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise NoRunningLoop(
            f"{what} needs a running event loop (a notebook cell or async code); in a script use {instead}"
        ) from None


async def _guarded(fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except Exception:  # the work records its own failures; this is a bug, and siblings must go on
        logger.exception("dagger-nb background work %s failed", getattr(fn, "__qualname__", fn))


def call_soon_on(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: Any) -> None:
    """``fn(*args)`` on ``loop``'s thread: at once when called there (or when the loop does not
    run), else scheduled on it from this thread. A closed loop is ignored: nobody waits there."""
    if loop.is_closed():
        return
    here = asyncio.get_running_loop() if loop_is_running() else None
    if here is loop or not loop.is_running():
        fn(*args)
        return
    with contextlib.suppress(RuntimeError):  # closed between the check and the call
        loop.call_soon_threadsafe(fn, *args)


def submit_to(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run ``coroutine`` on ``loop``, which runs in another thread (a Dask client's, say); the
    future gives its result (``await asyncio.wrap_future(future)`` on a loop, ``.result()`` off one)."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop)


class _Service:
    """The long-lived task on one loop that owns an anyio task group of background work."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        self.group: TaskGroup | None = None
        self.pending: list[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...], Callable[[], object]]] = []
        self.wakeup: anyio.Event | None = None
        #: set by close(): work submitted from now on goes to a new service, never to this dying one
        self.closing = False
        self.task = loop.create_task(self._serve(), name=f"dagger-nb {name}")

    async def _serve(self) -> None:
        async with anyio.create_task_group() as group:
            self.group = group
            while True:
                while self.pending:
                    fn, args, _ = self.pending.pop(0)
                    group.start_soon(_guarded, fn, args)
                self.wakeup = anyio.Event()
                await self.wakeup.wait()

    @property
    def alive(self) -> bool:
        """True while the service accepts work."""
        return not self.closing and not self.task.done()

    def submit(self, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...],
               on_drop: Callable[[], object]) -> None:
        self.pending.append((fn, args, on_drop))
        if self.wakeup is not None:
            self.wakeup.set()

    def _cancel_here(self) -> None:
        if self.group is not None:
            self.group.cancel_scope.cancel()
        else:
            self.task.cancel()
        dropped, self.pending = self.pending, []
        for _, _, on_drop in dropped:
            on_drop()

    def cancel(self) -> None:
        """Cancel the work and drop what never started, from any thread (on the loop's thread:
        cancel scopes belong to it)."""
        self.closing = True
        if not self.task.done():
            call_soon_on(self.loop, self._cancel_here)

    async def aclose(self) -> None:
        """Cancel the work and wait for it; on the loop's thread."""
        self.cancel()
        await asyncio.wait([self.task])


class BackgroundGroup:
    """Owns the work a facade starts in the background on the running loop.

    One service task per loop runs an anyio task group; :meth:`submit` hands it
    work. A facade may start work on two loops at once (the kernel's, and the
    private loop of a ``run_sync`` inside the kernel), so each loop gets its
    own service and closing covers them all. :meth:`aclose` cancels everything
    and waits for the work on the calling loop; :meth:`close` cancels from any
    thread without waiting (for synchronous ``close()`` methods). Work submitted
    after a close starts a new service.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._services: dict[asyncio.AbstractEventLoop, _Service] = {}
        #: cancelled services whose task may still be ending: aclose() on their loop waits for them
        self._closing: list[_Service] = []
        self._latest: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop work was last started on, while its service runs."""
        return self._latest if self._latest in self._live() else None

    @property
    def running(self) -> bool:
        """True while a service of the group accepts work on some loop."""
        return bool(self._live())

    def _live(self) -> dict[asyncio.AbstractEventLoop, _Service]:
        self._services = {loop: service for loop, service in self._services.items() if service.alive}
        return self._services

    def submit(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
        on_drop: Callable[[], object] = lambda: None,
        instead: str = "the synchronous form",
    ) -> None:
        """Run ``fn(*args)`` in the background on the calling thread's running loop.

        ``on_drop`` is called instead if the group is closed before ``fn`` could
        start; ``instead`` names the synchronous form for the no-loop error.
        """
        loop = require_loop(f"{self.name}: starting work in the background", instead=instead)
        service = self._live().get(loop)
        if service is None:
            service = self._services[loop] = _Service(loop, self.name)
        self._latest = loop
        service.submit(fn, args, on_drop)

    def close(self) -> None:
        """Cancel all background work, on every loop, without waiting; safe from any thread."""
        services, self._services = list(self._services.values()), {}
        self._closing = [service for service in self._closing if not service.task.done()] + services
        for service in services:
            service.cancel()

    async def aclose(self) -> None:
        """Cancel all background work and wait until the work on this loop has ended (work on
        another loop is cancelled there, without waiting)."""
        here = asyncio.get_running_loop()
        self.close()
        mine = [service for service in self._closing if service.loop is here]
        self._closing = [service for service in self._closing if service.loop is not here]
        if mine:
            await asyncio.wait([service.task for service in mine])


class LoopHop:
    """Carries calls from worker threads to the thread of the loop the work runs on.

    A run enters it while it runs (:meth:`entered`); a call from another thread
    then runs on the loop's thread. With no run under way, or on the loop's own
    thread, a call runs where it is made.
    """

    __slots__ = ("_thread", "_token", "_users")

    def __init__(self) -> None:
        self._users = 0
        self._thread: int | None = None
        self._token: Any = None

    def enter(self) -> None:
        """A run starts on the current loop."""
        self._users += 1
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()

    def leave(self) -> None:
        """A run ended."""
        self._users -= 1
        if self._users == 0:
            self._thread = self._token = None

    @contextmanager
    def entered(self) -> Iterator[None]:
        """:meth:`enter` for the duration of a ``with`` block."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @property
    def off_loop(self) -> bool:
        """True when called from a thread other than the running loop's (a worker thread)."""
        return self._token is not None and threading.get_ident() != self._thread

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the loop's thread; here when this is that thread or nothing runs.

        From a worker thread the call blocks until the loop has run ``fn``: never call it from a
        thread the loop itself is blocked on (the loop would wait for the thread, and the thread
        for the loop)."""
        if not self.off_loop:
            return fn(*args)
        return anyio.from_thread.run_sync(fn, *args, token=self._token)

    def call_async(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the loop from a worker thread, and return its result."""
        if not self.off_loop:
            raise RuntimeError("call_async() is for worker threads; on the loop, await the call")
        return anyio.from_thread.run(fn, *args, token=self._token)


def run_sync(
    async_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, on_interrupt: Callable[[], object] | None = None
) -> T:
    """Run ``async_fn(*args)`` to completion from synchronous code and return its result.

    In a script this is ``anyio.run``. Inside a running loop (a Jupyter kernel) a
    second loop cannot run on the same thread and patching the loop is unsafe,
    so the work runs on a private loop in a worker thread, in a copy of the
    caller's context (so the kernel files widget output under the waiting cell).
    A ``KeyboardInterrupt`` while waiting (the kernel's interrupt button) calls
    ``on_interrupt()`` on the worker's loop, or cancels the work when it is None,
    waits for the work to end, and re-raises. Objects bound to the caller's loop
    (handles, subscriptions) must not be shared with the private loop.

    >>> async def double(x):
    ...     return 2 * x
    >>> run_sync(double, 21)
    42
    """
    if not loop_is_running():
        return anyio.run(async_fn, *args)

    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}
    started = threading.Event()
    finished = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []
    scopes: list[anyio.CancelScope] = []

    async def main() -> T:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            loops.append(asyncio.get_running_loop())
            started.set()
            return await async_fn(*args)
        raise KeyboardInterrupt  # the scope was cancelled by an interrupt: the caller re-raises its own

    def target() -> None:
        try:
            outcome["value"] = context.run(anyio.run, main)
        except BaseException as error:
            outcome["error"] = error
        finally:
            started.set()
            finished.set()

    def interrupt() -> None:
        if on_interrupt is not None:
            on_interrupt()
        else:
            scopes[0].cancel()

    worker = threading.Thread(target=target, name="dagger-nb-wait", daemon=True)
    try:
        # start() inside the try: the interrupt may arrive before start() has even returned.
        worker.start()
        # An Event, not join(): a join() interrupted by KeyboardInterrupt may not wait again.
        finished.wait()
    except KeyboardInterrupt:
        started.wait()
        if loops and not finished.is_set():
            call_soon_on(loops[0], interrupt)  # ignored when the work ended (its loop closed) meanwhile
        finished.wait()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
