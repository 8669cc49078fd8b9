"""Run a coroutine function to completion from synchronous code.

In a plain script there is no running event loop, so we start one with
``anyio.run``. Inside a running loop (a Jupyter kernel, an async web app) a
second loop cannot run on the same thread and patching the loop with
nest-asyncio is unsafe, so the work runs on a private loop in a worker thread
and the caller's thread waits for it. Objects that are bound to the caller's
loop (handles, subscriptions) must not be shared with that private loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


def loop_is_running() -> bool:
    """True when the calling thread is running an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_sync(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``async_fn(*args)`` to completion and return its result.

    >>> async def double(x):
    ...     return 2 * x
    >>> run_sync(double, 21)
    42
    """
    if not loop_is_running():
        return anyio.run(async_fn, *args)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = anyio.run(async_fn, *args)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name="dagger-nb-sync", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
