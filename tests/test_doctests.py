"""Every example in the core's docstrings runs and shows what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dagger_nb

SKIPPED = ("dagger_nb.notebook", "dagger_nb.backends.dask", "dagger_nb.examples.demo")

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(dagger_nb.__path__, "dagger_nb.")
    if not info.name.startswith(SKIPPED)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    failures, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_the_examples_are_found() -> None:
    finder = doctest.DocTestFinder()
    examples = sum(len(test.examples) for name in MODULES for test in finder.find(importlib.import_module(name)))
    assert examples > 40
