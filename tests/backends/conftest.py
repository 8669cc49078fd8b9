"""One real Dask cluster for the whole session: 2 single-threaded worker processes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from dagger_nb import ActionRegistry  # noqa: E402 - after the skips: the backend needs dask
from dagger_nb.backends.dask import DaskBackend  # noqa: E402


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """A ``LocalCluster`` of 2 worker processes; a worker's death fails its task at once."""
    # allowed-failures=0: a task whose worker dies errs with KilledWorker instead of being
    # rerun silently by the scheduler, so the executor counts it as a failed attempt.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def dask_client(dask_cluster: Any) -> Iterator[Any]:
    """A synchronous client, as a notebook makes with ``Client(cluster)``."""
    client = distributed.Client(dask_cluster)
    client.wait_for_workers(2)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def registry() -> ActionRegistry:
    """An empty registry for the test's actions."""
    return ActionRegistry()


@pytest.fixture
def backend(dask_client: Any) -> DaskBackend:
    """A backend on the session's cluster."""
    return DaskBackend(dask_client)
