"""SQLite record of DAG runs: outcomes, DOT and the cache values that can be stored.

Values are stored as JSON when they can be, else pickled (DataFrames and other
Python objects); a value that cannot be pickled either is left out, and a
resumed run then reports the input that needs it as not produced. Pickles are
only ever read from the user's own database file: treat it like any pickle file.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

from dagger_nb.cache import Cache
from dagger_nb.dag.report import ExecutionReport, NodeOutcome
from dagger_nb.dag.run import Run
from dagger_nb.dag.spec import DagConfig, WorkflowSpec
from dagger_nb.storage import add_missing_columns, open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS dag_runs (
    run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    started_at REAL, finished_at REAL, spec TEXT NOT NULL, dot TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dag_nodes (
    run_id TEXT NOT NULL REFERENCES dag_runs(run_id) ON DELETE CASCADE, node TEXT NOT NULL,
    action TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, retry_messages TEXT NOT NULL,
    error TEXT, started_at REAL, finished_at REAL, notes TEXT NOT NULL, position INTEGER NOT NULL,
    worker TEXT, PRIMARY KEY (run_id, node)
);
CREATE TABLE IF NOT EXISTS dag_cache (
    run_id TEXT NOT NULL REFERENCES dag_runs(run_id) ON DELETE CASCADE, namespace TEXT NOT NULL,
    key TEXT NOT NULL, format TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (run_id, namespace, key)
);
"""


class RunStore:
    """Reads and writes runs in one SQLite file; safe to call from worker threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._connection = open_database(self.path, schema=SCHEMA)
        self._lock = threading.Lock()
        # a file written before nodes recorded their worker
        add_missing_columns(self._connection, "dag_nodes", {"worker": "TEXT"})

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.close()

    def save_run(self, report: ExecutionReport) -> None:
        """Insert or replace everything known about ``report``'s run, in one transaction."""
        run_id = report.run_id
        node_rows = [
            (run_id, o.node, o.action, o.status, o.attempts, json.dumps(o.retry_messages), o.error,
             o.started_at, o.finished_at, json.dumps(o.notes), position, o.worker)
            for position, o in enumerate(report.outcomes.values())
        ]
        namespaces = {"inputs", *report.outcomes}
        cache_rows = [
            (run_id, ns, key, *encoded)
            for ns, key, value in report.cache.items()
            if ns in namespaces and (encoded := _encode(value)) is not None
        ]
        with self._lock, self._connection as connection:
            connection.execute("BEGIN")
            connection.execute(
                "INSERT OR REPLACE INTO dag_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, report.workflow, report.status, report.error, report.started_at,
                 report.finished_at, report.spec.model_dump_json(exclude_unset=True), report.to_dot()),
            )
            connection.execute("DELETE FROM dag_nodes WHERE run_id = ?", (run_id,))
            connection.executemany("INSERT INTO dag_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", node_rows)
            connection.execute("DELETE FROM dag_cache WHERE run_id = ?", (run_id,))
            connection.executemany("INSERT INTO dag_cache VALUES (?, ?, ?, ?, ?)", cache_rows)

    def run_rows(self) -> list[dict[str, Any]]:
        """One summary row per stored run."""
        query = (
            "SELECT r.run_id, r.workflow, r.status, r.started_at, r.finished_at, "
            "(SELECT COUNT(*) FROM dag_nodes n WHERE n.run_id = r.run_id), "
            "(SELECT COUNT(*) FROM dag_nodes n WHERE n.run_id = r.run_id AND n.status = 'failed'), "
            "r.error FROM dag_runs r"
        )
        columns = ["run_id", "workflow", "status", "started_at", "finished_at", "nodes", "failed", "error"]
        with self._lock:
            return [dict(zip(columns, row, strict=True)) for row in self._connection.execute(query)]

    def dot(self, name_or_run_id: str) -> str | None:
        """DOT of run ``name_or_run_id``, or of the latest stored run of that workflow."""
        with self._lock:
            row = self._connection.execute(
                "SELECT dot FROM dag_runs WHERE run_id = ? OR workflow = ? "
                "ORDER BY run_id = ? DESC, started_at DESC LIMIT 1",
                (name_or_run_id, name_or_run_id, name_or_run_id),
            ).fetchone()
        return None if row is None else str(row[0])

    def load_run(self, run_id: str, *, config_for: Callable[[WorkflowSpec], DagConfig]) -> Run | None:
        """Rebuild run ``run_id`` (spec, outcomes, cache) so it can be resumed; None if unknown."""
        with self._lock:
            row = self._connection.execute(
                "SELECT spec, status, error, started_at, finished_at FROM dag_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                return None
            nodes = self._connection.execute(
                "SELECT node, action, status, attempts, retry_messages, error, started_at, finished_at, notes, "
                "worker FROM dag_nodes WHERE run_id = ? ORDER BY position", (run_id,)
            ).fetchall()
            values = self._connection.execute(
                "SELECT namespace, key, format, value FROM dag_cache WHERE run_id = ?", (run_id,)
            ).fetchall()
        spec = WorkflowSpec.model_validate_json(row[0])
        outcomes = {
            node: NodeOutcome(node, action, status, attempts, json.loads(retries), error, started, finished,
                              json.loads(notes), worker)
            for node, action, status, attempts, retries, error, started, finished, notes, worker in nodes
        }
        cache = Cache()
        for namespace, key, fmt, blob in values:
            cache.insert(namespace, key, json.loads(blob) if fmt == "json" else pickle.loads(blob))
        run = Run(spec, config=config_for(spec), cache=cache, run_id=run_id, outcomes=outcomes)
        run.status, run.error, run.started_at, run.finished_at = row[1], row[2], row[3], row[4]
        if run.status == "running":
            # The process that ran it died: it can be resumed like a cancelled run.
            run.status = "cancelled"
        return run


def _encode(value: Any) -> tuple[str, bytes] | None:
    try:
        text = json.dumps(value)
        if json.loads(text) == value:  # tuples, int-keyed dicts, NaN... would come back changed
            return "json", text.encode()
    except (TypeError, ValueError):
        pass
    try:
        return "pickle", pickle.dumps(value)
    except Exception:
        return None
