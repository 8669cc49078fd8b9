"""The crash-matrix suite: SIGKILL, a full disk and a second process against the three stores.

One scenario module per paradigm (``dag_scenario``, ``agents_scenario``, ``pubsub_scenario``)
exposes ``crash_matrix(*, kills, items, workdir, seed) -> dict[str, int]``; the small pytest
files here run it with a handful of kills and ``bench/crash_matrix.py`` runs the large version.
"""
