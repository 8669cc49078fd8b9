"""The examples in the pub/sub docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "dagger_nb.pubsub",
    "dagger_nb.pubsub.agent",
    "dagger_nb.pubsub.message",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    failures, tried = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert tried > 0
    assert failures == 0
