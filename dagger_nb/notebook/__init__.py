"""The notebook layer: ``%load_ext dagger_nb`` magics, the kernel session and live dashboards.

Importing this package registers nothing; ``%load_ext dagger_nb`` (or
:func:`load_ipython_extension`) does. See ``docs/notebooks.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dagger_nb._loop import run_sync
from dagger_nb.notebook.session import Session, session, use_session

T = TypeVar("T")


def load_ipython_extension(ipython: Any) -> None:
    """Register :class:`~dagger_nb.notebook.magics.DaggerMagics` on ``ipython`` with the kernel's session."""
    from dagger_nb.notebook.magics import load_magics

    load_magics(ipython, session())


def run_blocking(async_fn: Callable[[], Awaitable[T]], *, on_interrupt: Callable[[], object] | None = None) -> T:
    """Deprecated: block on a workflow with :meth:`Session.run_sync`, or on a run started any way
    with :meth:`Session.wait_sync`.

    Runs ``async_fn()`` to completion and returns its result, on a private loop in a worker thread
    when a loop runs (see :func:`dagger_nb._loop.run_sync`); a ``KeyboardInterrupt`` calls
    ``on_interrupt()`` (or cancels the work), waits for the work to end and re-raises.
    """
    warnings.warn(
        "dagger_nb.notebook.run_blocking() is deprecated; use Session.run_sync() or Session.wait_sync()",
        DeprecationWarning,
        stacklevel=2,
    )

    async def call() -> T:  # run_sync wants a coroutine function; run_blocking took any awaitable
        return await async_fn()

    return run_sync(call, on_interrupt=on_interrupt)


def __getattr__(name: str) -> Any:
    # The widgets and magics import ipywidgets / IPython: only load them when asked for.
    if name == "RunDashboard":
        from dagger_nb.notebook.dashboards.run import RunDashboard

        return RunDashboard
    if name == "JobDashboard":
        from dagger_nb.notebook.dashboards.job import JobDashboard

        return JobDashboard
    if name == "PubSubMonitor":
        from dagger_nb.notebook.dashboards.pubsub import PubSubMonitor

        return PubSubMonitor
    if name == "DaggerMagics":
        from dagger_nb.notebook.magics import DaggerMagics

        return DaggerMagics
    raise AttributeError(f"module 'dagger_nb.notebook' has no attribute {name!r}")


__all__ = [
    "DaggerMagics",
    "JobDashboard",
    "PubSubMonitor",
    "RunDashboard",
    "Session",
    "load_ipython_extension",
    "run_blocking",
    "session",
    "use_session",
]
