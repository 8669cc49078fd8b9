"""The crash matrix of a supervisor loop (``run_agent_dag``): steps that add tool nodes at
run time, SIGKILLed mostly while a step thinks after its tools finished. ``items`` is the number
of steps; ``orphans`` counts nodes a killed step added that were kept and then added again.

The scenario itself lives in :mod:`tests.reliability.dag_scenario`; this module gives it the
common ``crash_matrix`` signature so ``bench/crash_matrix.py`` runs it as one more row.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability.dag_scenario import dynamic_crash_matrix


def crash_matrix(*, kills: int, items: int, workdir: Path, seed: int) -> dict[str, int]:
    """:func:`dynamic_crash_matrix` with ``items`` supervisor steps."""
    return dynamic_crash_matrix(kills=kills, steps=items, workdir=workdir, seed=seed)
