"""The notebook layer: ``%load_ext dagger_nb`` magics, the kernel session and live dashboards.

Importing this package registers nothing; ``%load_ext dagger_nb`` (or
:func:`load_ipython_extension`) does. See ``docs/notebooks.md``.
"""

from __future__ import annotations

from typing import Any

from dagger_nb.notebook.session import Session, session, use_session


def load_ipython_extension(ipython: Any) -> None:
    """Register :class:`~dagger_nb.notebook.magics.DaggerMagics` on ``ipython`` with the kernel's session."""
    from dagger_nb.notebook.magics import load_magics

    load_magics(ipython, session())


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
    "session",
    "use_session",
]
