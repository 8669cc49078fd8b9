"""Fixtures for the task agent tests: an isolated agent registry per test."""

from __future__ import annotations

import pytest

import dagger_nb

# TEMPORARY until the lead adds the exports to dagger_nb/__init__.py.
import dagger_nb.agents as _agents
from dagger_nb.agents import TaskAgentRegistry

for _name in _agents.__all__:
    if not hasattr(dagger_nb, _name):
        setattr(dagger_nb, _name, getattr(_agents, _name))


@pytest.fixture
def registry() -> TaskAgentRegistry:
    """A fresh registry, so tests never share agents through the default one."""
    return dagger_nb.TaskAgentRegistry()
