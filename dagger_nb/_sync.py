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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from anyio.from_thread import start_blocking_portal

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
    # A private loop in a worker thread. An interrupt of the waiting caller (Ctrl-C, the
    # kernel's interrupt button) leaves the portal with an exception, which cancels the work.
    with start_blocking_portal() as portal:
        return portal.call(async_fn, *args)
