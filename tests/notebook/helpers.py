"""Cells used by several notebook tests."""

from __future__ import annotations

ADD_ACTION = '''%%dagger_action
async def add(a, b):
    return a + b
'''

SUMS = '''%%dagger_workflow sums{options}
nodes:
  - id: first
    action: add
    inputs: [{{name: a, reference: inputs.x}}, {{name: b, value: 1}}]
  - id: second
    action: add
    inputs: [{{name: a, reference: first.result}}, {{name: b, value: 10}}]
'''


def sums(options: str = "") -> str:
    """The ``sums`` workflow cell with magic-line ``options``."""
    return SUMS.format(options=f" {options}" if options else "")
