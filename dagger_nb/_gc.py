"""A pause of Python's cyclic garbage collector while dagger-nb builds big structures."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a workflow is read or checked, or a plan or a
    run's outcomes are built, then turn it back on.

    These builds make many small containers that all live on and form no cycle, so a
    collection during them can free nothing; yet counted one by one as they are made, they
    set off collections, full ones on a big workflow that walk every object of the process
    (big workflows would take quadratic time). Turned back on, the collector counts them as
    one batch. The pause lasts the build only (no user code runs in it), and a collector
    someone else turned off stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
