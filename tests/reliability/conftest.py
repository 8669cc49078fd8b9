"""Fixtures of the reliability suite.

``small_tmpfs`` gives a folder on a freshly mounted, tiny tmpfs, so a test can fill the disk
under a store and watch it fail cleanly. Mounting needs root: elsewhere the test is skipped,
saying why. The size defaults to 2 MiB; ``@pytest.mark.tmpfs_size("512k")`` changes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # scenario modules import as tests.reliability.<name>, as bench/ does
    sys.path.insert(0, str(ROOT))

DEFAULT_TMPFS_SIZE = "2m"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tmpfs_size(size): size of the small_tmpfs mount, e.g. '512k' or '4m'")


def _mount_tmpfs(target: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``target``; the reason it could not, or None."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs for disk-full cases needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        return f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}"
    return None


@pytest.fixture
def small_tmpfs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A folder on a tiny tmpfs of its own (2 MiB unless marked ``tmpfs_size``), unmounted after."""
    marker = request.node.get_closest_marker("tmpfs_size")
    size = str(marker.args[0]) if marker is not None else DEFAULT_TMPFS_SIZE
    target = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    target.mkdir()
    reason = _mount_tmpfs(target, size)
    if reason is not None:
        pytest.skip(reason)
    try:
        yield target
    finally:
        # lazy: a store the test leaked open must not turn teardown into an error
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=60)


@pytest.fixture
def fill_disk() -> Callable[[Path], int]:
    """Fill the file system holding a folder until a write fails with ENOSPC; returns the
    bytes written. The filler file stays, so later writes there fail too (delete it to
    free the space again: it is ``<folder>/filler``)."""

    def fill(folder: Path, *, chunk: int = 64 * 1024) -> int:
        written = 0
        block = b"\0" * chunk
        with open(folder / "filler", "ab", buffering=0) as filler:
            while chunk >= 1:
                try:
                    written += filler.write(block[:chunk])
                except OSError:
                    chunk //= 2  # the last blocks: fill to the very end
        return written

    return fill
