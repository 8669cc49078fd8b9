"""Pub/sub with a database under SIGKILL and a full disk."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import dagger_nb
from dagger_nb.errors import StorageError
from tests.reliability.pubsub_scenario import crash_matrix


def test_killed_publishers_and_subscribers_lose_nothing_acknowledged_and_redo_only_in_flight(
    tmp_path: Path,
) -> None:
    counts = crash_matrix(kills=5, items=3000, workdir=tmp_path, seed=41)
    assert counts["kills"] >= 3, counts  # the scenario must really have killed the run mid-way
    assert counts["lost"] == 0, counts
    assert counts["stuck"] == 0, counts
    assert counts["redone"] <= counts["in_flight_allowance"], counts


@pytest.mark.tmpfs_size("1m")
def test_a_full_disk_fails_publish_with_storage_error_and_keeps_what_was_acknowledged(small_tmpfs: Path) -> None:
    db = small_tmpfs / "bus.db"
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 128 * 1024)  # freed afterwards, to reopen the file
    registry = dagger_nb.PubSubAgentRegistry()
    bus = dagger_nb.PubSub(db=db, registry=registry)
    acknowledged: list[int] = []

    async def publish_until_full() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(bus.run)
            with pytest.raises(StorageError, match=rf"cannot write the pub/sub log '{db}': database or disk is full"):
                for n in range(1000):
                    await bus.publish("big", {"n": n, "text": "x" * 20_000})
                    acknowledged.append(n)
            bus.stop()

    anyio.run(publish_until_full)
    assert acknowledged  # some fitted before the disk was full
    ballast.unlink()
    bus.close()

    reopened = dagger_nb.PubSub(db=db, registry=registry)
    stored = [payload["n"] for payload in reopened.history_frame("big")["payload"]]
    assert stored == acknowledged  # every acknowledged message, and not the one that failed
    reopened.close()
