"""What :class:`~dagger_nb.dag.executor.DagExecutor` remembers of its runs: listing them,
drawing one, and forgetting old ones.

Separate from the executor, which starts and grows runs, because this side only reads the
runs it holds in memory and, with ``db``, those its run store recorded.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from dagger_nb.dag.dot import workflow_dot
from dagger_nb.dag.report import NodeOutcome
from dagger_nb.errors import RunNotFound

if TYPE_CHECKING:
    import pandas as pd

    from dagger_nb.dag.run import Run
    from dagger_nb.dag.spec import WorkflowSpec
    from dagger_nb.dag.store import RunStore


class RunHistory:
    """The executor's runs: :meth:`runs_frame`, :meth:`to_dot`."""

    keep_runs: int
    _runs: dict[str, Run]
    _latest: dict[str, str]
    _store: RunStore | None
    _workflows: dict[str, WorkflowSpec]

    def runs_frame(self) -> pd.DataFrame:
        """Every run of this executor (and, with ``db``, of earlier processes), newest first.

        A stored run that reads ``running`` but is not running in this executor was
        interrupted (its process died, or an earlier executor was closed mid-run): it is
        listed ``interrupted`` and can be resumed.
        """
        from dagger_nb.dag.store import runs_frame

        return runs_frame([run.snapshot() for run in self._runs.values()], self._store)

    def runs(self) -> pd.DataFrame:
        """Deprecated: use :meth:`runs_frame`."""
        warnings.warn("DagExecutor.runs() is deprecated; use DagExecutor.runs_frame()", DeprecationWarning,
                      stacklevel=2)
        return self.runs_frame()

    def to_dot(self, name_or_run_id: str) -> str:
        """DOT of run ``name_or_run_id``, or of the latest run of that workflow.

        A workflow that never ran gives its structure with every node pending; anything
        else raises :class:`RunNotFound`.
        """
        run = self._runs.get(name_or_run_id)
        if run is None and name_or_run_id in self._latest:
            run = self._runs.get(self._latest[name_or_run_id])
        if run is not None:
            return workflow_dot(run.spec, run.snapshot().outcomes)
        if self._store is not None:
            dot = self._store.dot(name_or_run_id)
            if dot is not None:
                return dot
        if name_or_run_id in self._workflows:
            spec = self._workflows[name_or_run_id]
            return workflow_dot(spec, {n.id: NodeOutcome(n.id, n.action) for n in spec.nodes})
        raise RunNotFound(name_or_run_id)

    def serialize_tree_to_dot(self, name_or_run_id: str) -> str:
        """Deprecated: use :meth:`to_dot`."""
        warnings.warn("DagExecutor.serialize_tree_to_dot() is deprecated; use DagExecutor.to_dot()",
                      DeprecationWarning, stacklevel=2)
        return self.to_dot(name_or_run_id)

    def _forget_old_runs(self) -> None:
        """Keep at most ``keep_runs`` finished runs in memory (the oldest go first)."""
        finished = [run_id for run_id, run in self._runs.items() if run.report is not None]
        for run_id in finished[: max(0, len(finished) - self.keep_runs)]:
            run = self._runs.pop(run_id)
            if self._latest.get(run.spec.name) == run_id:
                del self._latest[run.spec.name]
