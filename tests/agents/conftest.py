"""Fixtures for the task agent tests: an isolated agent registry per test."""

from __future__ import annotations

import pytest

import dagger_nb
from dagger_nb.agents import TaskAgentRegistry


@pytest.fixture
def registry() -> TaskAgentRegistry:
    """A fresh registry, so tests never share agents through the default one."""
    return dagger_nb.TaskAgentRegistry()
