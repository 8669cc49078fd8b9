"""Shared fixtures: anyio runs every async test on asyncio (the kernel's loop)."""

from __future__ import annotations

from pathlib import Path

import pytest

RESOURCES = Path(__file__).parent / "resources"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def resources() -> Path:
    """Folder of YAML fixtures written in the Rust Dagger format."""
    return RESOURCES
