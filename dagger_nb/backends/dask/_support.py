"""The optional Dask imports every part of the Dask backend shares, and what they share besides."""

from __future__ import annotations

import traceback
from typing import Any

_IMPORT_ERROR: ImportError | None = None
try:
    import distributed
    from dask import is_dask_collection
    from dask.sizeof import sizeof
    from distributed.protocol import pickle as dask_pickle
except ImportError as error:  # the optional extra is not installed
    _IMPORT_ERROR = error
    # defined all the same, so that the backend's modules import and DaskBackend() says what to install
    distributed = is_dask_collection = sizeof = dask_pickle = None  # type: ignore[assignment]
try:
    # What Client.submit builds its one-task graph of; private, so a Dask without them
    # gets one client.submit per call (see SendBatch.submit).
    from dask._expr import LLGExpr
    from dask._task_spec import Task, TaskRef, parse_input
except ImportError:
    LLGExpr = Task = TaskRef = parse_input = None  # type: ignore[misc,assignment]
_PluginBase: Any = distributed.WorkerPlugin if _IMPORT_ERROR is None else object


def _forget_locals(error: BaseException) -> None:
    """Clear the locals of the (finished) frames a failed submit left in ``error``: they hold the
    futures of the call and of those it waits for, whose keys would stay on the cluster for as long
    as anything keeps the error (Dask logs it: a handler may keep the record)."""
    seen: BaseException | None = error
    while seen is not None:  # with the errors Dask's pickling fallbacks raised on the way
        traceback.clear_frames(seen.__traceback__)
        seen = seen.__context__


__all__ = [
    "_IMPORT_ERROR",
    "LLGExpr",
    "Task",
    "TaskRef",
    "_PluginBase",
    "_forget_locals",
    "dask_pickle",
    "distributed",
    "is_dask_collection",
    "parse_input",
    "sizeof",
]
