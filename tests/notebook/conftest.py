"""Fixtures for the notebook layer: a real IPython shell with the magics on an isolated session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

from dagger_nb.dag import ActionRegistry
from dagger_nb.notebook.magics import DaggerMagics, load_magics
from dagger_nb.notebook.session import Session


@pytest.fixture(scope="session")
def shell() -> Iterator[InteractiveShell]:
    """One real InteractiveShell for the test session (IPython keeps it as a singleton)."""
    shell = InteractiveShell.instance()
    yield shell


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    """A session of its own (fresh registries and cache), closed after the test."""
    session = Session(registry=ActionRegistry())
    yield session
    await session.aclose()


@pytest.fixture
def magics(shell: InteractiveShell, session: Session) -> DaggerMagics:
    """The magics registered on the shell, working on ``session``; the user namespace is reset."""
    shell.reset(new_session=False)
    return load_magics(shell, session)


def run(shell: InteractiveShell, source: str) -> object:
    """Run a cell; raise what it raised (a UsageError from a magic, or the user's error)."""
    result = shell.run_cell(source, store_history=False)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result
