"""SQLite record of DAG runs: outcomes, DOT and the cache values that can be stored.

A run is written whole when it starts and ends, and each node's outcome and
outputs are committed as the node finishes (:meth:`RunStore.commit_nodes`, fed
by :class:`dagger_nb.dag.journal.NodeJournal`), so after a crash a resume re-runs
only the nodes that had not finished. The store holds the file's process lock
(:class:`dagger_nb.storage.ProcessLock`) while it is open: one live process at a
time records runs in a file, and a run left ``running`` by a process that is gone
reads ``interrupted``.

Values are stored as JSON when they can be, else pickled (DataFrames and other
Python objects); a value that cannot be pickled either is left out, and a
resumed run then reports the input that needs it as not produced. Pickles are
only ever read from the user's own database file: treat it like any pickle file.
Every failure to write or read the file is a :class:`StorageError` naming it.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pydantic

from dagger_nb._traceback import printable
from dagger_nb.cache import Cache
from dagger_nb.dag.report import ExecutionReport, NodeOutcome, RunStatus
from dagger_nb.dag.run import Run
from dagger_nb.dag.spec import DagConfig, WorkflowSpec
from dagger_nb.errors import DatabaseInUse, StorageError
from dagger_nb.storage import ProcessLock, add_missing_columns, open_database

if TYPE_CHECKING:
    import pandas as pd

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
CREATE TABLE IF NOT EXISTS dag_usage (
    run_id TEXT NOT NULL REFERENCES dag_runs(run_id) ON DELETE CASCADE, node TEXT NOT NULL,
    tokens INTEGER NOT NULL, cost REAL, models TEXT NOT NULL, PRIMARY KEY (run_id, node)
);
"""

_RUN_STATUSES = {"pending", "running", "succeeded", "failed", "paused", "cancelled", "interrupted"}
_NODE_STATUSES = {"pending", "running", "succeeded", "cached", "failed", "skipped", "cancelled"}

#: one finished node for :meth:`RunStore.commit_nodes`: its outcome, its position in the
#: workflow, and its cache namespace's values (None: leave the stored values as they are)
NodeRecord = tuple[NodeOutcome, int, "dict[str, Any] | None"]


class RunStore:
    """Reads and writes runs in one SQLite file; safe to call from worker threads.

    Holds the file's process lock until :meth:`close`; ``on_takeover`` is called when a
    later store of this process takes the file over (it must close this one).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, on_takeover: Callable[[], None] | None = None
    ) -> None:
        self.path = os.fspath(path)
        try:
            self._process_lock = ProcessLock(self.path, owner="DagExecutor", on_takeover=on_takeover)
        except DatabaseInUse as error:
            error.args = (
                f"{error}. Its runs are recorded by that process: a run there cannot be resumed "
                "or listed from here until it ends",
            )
            raise
        self.closed = False
        self._closed_because = "it was closed"
        try:
            self._connection = open_database(self.path, schema=SCHEMA)
            with self._storage_errors("open"):
                # files written before nodes recorded their worker, and runs their owner
                add_missing_columns(self._connection, "dag_nodes", {
                    "worker": "TEXT", "reason": "TEXT", "cached_from": "TEXT", "traceback": "TEXT", "logs": "TEXT",
                })
                add_missing_columns(self._connection, "dag_runs", {"owner_pid": "INTEGER", "added_by": "TEXT"})
        except BaseException:
            self._process_lock.release()
            raise
        self._lock = threading.Lock()

    def close(self, *, reason: str = "it was closed") -> None:
        """Close the connection and give the file's lock up; safe to call twice.

        ``reason`` ends the message of any later call ("the run store is closed: <reason>").
        """
        with self._lock:
            if not self.closed:
                self.closed = True
                self._closed_because = reason
                self._connection.close()
        self._process_lock.release()

    # -- writing ---------------------------------------------------------------------------------

    def save_run(
        self, report: ExecutionReport, *, skip_namespaces: Iterable[str] = (), added_by: Mapping[str, str] | None = None
    ) -> None:
        """Insert or replace everything known about ``report``'s run, in one transaction.

        The cache values of ``skip_namespaces`` (already committed with their nodes) are left as stored.
        ``added_by``: added node -> the node whose action added it (``Run.added_by``).
        """
        run_id = report.run_id
        node_rows = [_node_row(run_id, o, position) for position, o in enumerate(report.outcomes.values())]
        skipped = set(skip_namespaces)
        namespaces = {"inputs", *report.outcomes} - skipped
        cache_rows = [
            (run_id, ns, key, *encoded)
            for ns, key, value in report.cache.items()
            if ns in namespaces and (encoded := _encode(value)) is not None
        ]
        spec_json = report.spec.model_dump_json(exclude_unset=True)
        adders = _adders_json(added_by, report.spec)
        dot = report.to_dot()
        with self._write("record run", run_id) as connection:
            connection.execute(
                # an upsert: replacing the row would delete the run's nodes and values (ON DELETE CASCADE)
                "INSERT INTO dag_runs (run_id, workflow, status, error, started_at, finished_at, "
                "spec, dot, owner_pid, added_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) "
                "DO UPDATE SET workflow = excluded.workflow, status = excluded.status, error = excluded.error, "
                "started_at = excluded.started_at, finished_at = excluded.finished_at, spec = excluded.spec, "
                "dot = excluded.dot, owner_pid = excluded.owner_pid, added_by = excluded.added_by",
                (run_id, report.workflow, report.status, report.error, report.started_at,
                 report.finished_at, spec_json, dot, os.getpid(), adders),
            )
            connection.execute("DELETE FROM dag_nodes WHERE run_id = ?", (run_id,))
            connection.executemany("INSERT INTO dag_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                   node_rows)
            if skipped:
                connection.executemany(
                    "DELETE FROM dag_cache WHERE run_id = ? AND namespace = ?", [(run_id, ns) for ns in namespaces]
                )
            else:
                connection.execute("DELETE FROM dag_cache WHERE run_id = ?", (run_id,))
            connection.executemany("INSERT INTO dag_cache VALUES (?, ?, ?, ?, ?)", cache_rows)
            connection.execute("DELETE FROM dag_usage WHERE run_id = ?", (run_id,))
            connection.executemany("INSERT INTO dag_usage VALUES (?, ?, ?, ?, ?)",
                                   _usage_rows(run_id, report.outcomes.values()))

    def commit_nodes(
        self, run_id: str, records: list[NodeRecord], *, spec: WorkflowSpec | None = None,
        added_by: Mapping[str, str] | None = None,
    ) -> None:
        """Commit finished nodes (and the grown workflow ``spec`` with its ``added_by``, if given) in
        one transaction."""
        node_rows = [_node_row(run_id, outcome, position) for outcome, position, _ in records]
        replaced = [(run_id, outcome.node) for outcome, _, values in records if values is not None]
        cache_rows = [
            (run_id, outcome.node, key, *encoded)
            for outcome, _, values in records if values
            for key, value in values.items() if (encoded := _encode(value)) is not None
        ]
        spec_json = spec.model_dump_json(exclude_unset=True) if spec is not None else None
        adders = _adders_json(added_by, spec) if spec is not None else None
        with self._write("record nodes of run", run_id) as connection:
            if spec_json is not None:
                connection.execute("UPDATE dag_runs SET spec = ?, added_by = ? WHERE run_id = ?",
                                   (spec_json, adders, run_id))
            connection.executemany(
                "INSERT OR REPLACE INTO dag_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", node_rows
            )
            connection.executemany("DELETE FROM dag_cache WHERE run_id = ? AND namespace = ?", replaced)
            connection.executemany("INSERT OR REPLACE INTO dag_cache VALUES (?, ?, ?, ?, ?)", cache_rows)
            connection.executemany("INSERT OR REPLACE INTO dag_usage VALUES (?, ?, ?, ?, ?)",
                                   _usage_rows(run_id, [outcome for outcome, _, _ in records]))

    def save_values(self, run_id: str, namespaces: dict[str, dict[str, Any]]) -> None:
        """Store (insert or replace) the values of ``namespaces`` of run ``run_id``: a snapshot of what
        running nodes wrote through ``ctx``, kept if the process dies before they finish."""
        rows = [(run_id, ns, key, *encoded) for ns, values in namespaces.items()
                for key, value in values.items() if (encoded := _encode(value)) is not None]
        with self._write("snapshot the cache of run", run_id) as connection:
            connection.executemany("INSERT OR REPLACE INTO dag_cache VALUES (?, ?, ?, ?, ?)", rows)

    def mark_ended(self, run_id: str, status: str, error: str | None, finished_at: float | None) -> None:
        """Record only the end of run ``run_id`` (when writing the whole run failed)."""
        with self._write("record the end of run", run_id) as connection:
            connection.execute(
                "UPDATE dag_runs SET status = ?, error = ?, finished_at = ? WHERE run_id = ?",
                (status, error, finished_at, run_id),
            )

    # -- reading ---------------------------------------------------------------------------------

    def run_rows(self) -> list[dict[str, Any]]:
        """One summary row per stored run; a run left ``running`` reads ``interrupted`` (this
        store holds the file's lock, so no other live process is running it)."""
        query = (
            "SELECT r.run_id, r.workflow, r.status, r.started_at, r.finished_at, "
            "(SELECT COUNT(*) FROM dag_nodes n WHERE n.run_id = r.run_id), "
            "(SELECT COUNT(*) FROM dag_nodes n WHERE n.run_id = r.run_id AND n.status = 'failed'), "
            "r.error, (SELECT COALESCE(SUM(u.tokens), 0) FROM dag_usage u WHERE u.run_id = r.run_id) "
            "FROM dag_runs r"
        )
        columns = RUN_COLUMNS
        with self._read("list the runs"):
            rows = [dict(zip(columns, row, strict=True)) for row in self._connection.execute(query)]
        for row in rows:
            where = f"run store '{self.path}', run '{row['run_id']}'"
            if row["status"] not in _RUN_STATUSES or not isinstance(row["run_id"], str):
                raise StorageError(f"{where}: unknown status {row['status']!r}")
            if not _times(row["started_at"], row["finished_at"]) or not isinstance(row["workflow"], str):
                raise StorageError(f"{where}: its row is damaged (a time or the workflow name has the wrong type)")
            if row["status"] == "running":
                row["status"] = "interrupted"
        return rows

    def dot(self, name_or_run_id: str) -> str | None:
        """DOT of run ``name_or_run_id``, or of the latest stored run of that workflow."""
        with self._read("read a run's graph"):
            row = self._connection.execute(
                "SELECT dot, status, run_id FROM dag_runs WHERE run_id = ? OR workflow = ? "
                "ORDER BY run_id = ? DESC, started_at DESC LIMIT 1",
                (name_or_run_id, name_or_run_id, name_or_run_id),
            ).fetchone()
        if row is None:
            return None
        if row[1] == "running":  # interrupted: the DOT of its start is stale, the node rows are not
            run = self.load_run(str(row[2]), config_for=lambda spec: spec.config)
            if run is not None:
                return run.snapshot().to_dot()
        if not isinstance(row[0], str):
            raise StorageError(f"run store '{self.path}': run '{row[2]}' has no readable graph")
        return row[0]

    def load_run(self, run_id: str, *, config_for: Callable[[WorkflowSpec], DagConfig]) -> Run | None:
        """Rebuild run ``run_id`` (spec, outcomes, cache) so it can be resumed; None if unknown.

        A run the store says is running was interrupted (its process is gone): it reads
        ``interrupted`` and can be resumed.
        """
        with self._read(f"read run '{run_id}'"):
            row = self._connection.execute(
                "SELECT spec, status, error, started_at, finished_at, added_by FROM dag_runs WHERE run_id = ?",
                (run_id,)
            ).fetchone()
            if row is None:
                return None
            nodes = self._connection.execute(
                "SELECT node, action, status, attempts, retry_messages, error, started_at, finished_at, notes, "
                "worker, reason, cached_from, traceback, logs FROM dag_nodes WHERE run_id = ? ORDER BY position",
                (run_id,),
            ).fetchall()
            values = self._connection.execute(
                "SELECT namespace, key, format, value FROM dag_cache WHERE run_id = ?", (run_id,)
            ).fetchall()
            usage = self._connection.execute(
                "SELECT node, tokens, cost, models FROM dag_usage WHERE run_id = ?", (run_id,)
            ).fetchall()
        where = f"run store '{self.path}', run '{run_id}'"
        try:
            spec = WorkflowSpec.model_validate_json(row[0])
        except (pydantic.ValidationError, ValueError, TypeError) as error:
            raise StorageError(f"{where}: its workflow cannot be read: {_first_line(error)}") from None
        stored = {}
        for fields in nodes:
            outcome = _outcome(fields, where)
            stored[outcome.node] = outcome
        unknown = set(stored) - {node.id for node in spec.nodes}
        if unknown:
            raise StorageError(f"{where}: node rows {sorted(unknown)[:5]} are not nodes of its workflow")
        # a node added while the run ran, which had not finished when it stopped, has no row yet
        outcomes = {node.id: stored.get(node.id) or NodeOutcome(node.id, node.action) for node in spec.nodes}
        for fields in usage:
            _add_stored_usage(outcomes, fields, where)
        cache = Cache()
        for namespace, key, fmt, blob in values:
            cache.insert(str(namespace), str(key), _decode(fmt, blob, f"{where}, value '{namespace}.{key}'"))
        run = Run(spec, config=config_for(spec), cache=cache, run_id=run_id, outcomes=outcomes)
        run.added_by = _load_adders(row[5], set(outcomes), where)
        status = row[1]
        if status not in _RUN_STATUSES:
            raise StorageError(f"{where}: unknown status {status!r}")
        if not _times(row[3], row[4]) or not (row[2] is None or isinstance(row[2], str)):
            raise StorageError(f"{where}: its row is damaged (a time or the error has the wrong type)")
        run.status, run.error, run.started_at, run.finished_at = RunStatus(status), row[2], row[3], row[4]
        if run.status == "running":
            run.status = RunStatus.INTERRUPTED
        return run

    # -- plumbing --------------------------------------------------------------------------------

    @contextmanager
    def _write(self, what: str, run_id: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self.closed:
                raise StorageError(
                    f"cannot {what} '{run_id}' in '{self.path}': the run store is closed: {self._closed_because}"
                )
            try:
                with self._connection as connection:
                    connection.execute("BEGIN IMMEDIATE")
                    yield connection
            except sqlite3.Error as error:
                raise StorageError(f"cannot {what} '{run_id}' in '{self.path}': {error}") from None
            except (ValueError, TypeError) as error:  # text SQLite cannot take (a lone surrogate), ...
                detail = printable(f"{type(error).__name__}: {error}")
                raise StorageError(
                    f"cannot {what} '{run_id}' in '{self.path}': a value cannot be stored: {detail}"
                ) from None

    @contextmanager
    def _read(self, what: str) -> Iterator[None]:
        with self._lock:
            if self.closed:
                raise StorageError(f"cannot {what} from '{self.path}': the run store is closed: {self._closed_because}")
            try:
                yield
            except sqlite3.Error as error:
                raise StorageError(f"cannot {what} from run store '{self.path}': {error}") from None

    @contextmanager
    def _storage_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            self._connection.close()
            raise StorageError(f"cannot {what} run store '{self.path}': {error}") from None


RUN_COLUMNS = ["run_id", "workflow", "status", "started_at", "finished_at", "nodes", "failed", "error", "tokens"]


def runs_frame(live: Iterable[ExecutionReport], store: RunStore | None) -> pd.DataFrame:
    """One row per run (``RUN_COLUMNS``), newest first: the ``live`` ones as they are now, then
    the stored ones not among them."""
    import pandas as pd

    rows = {
        report.run_id: {
            "run_id": report.run_id, "workflow": report.workflow, "status": report.status,
            "started_at": report.started_at, "finished_at": report.finished_at, "nodes": len(report.outcomes),
            "failed": report.counts().get("failed", 0), "error": report.error,
            "tokens": report.tokens,
        }
        for report in live
    }
    if store is not None:
        for row in store.run_rows():
            rows.setdefault(row["run_id"], row)
    frame = pd.DataFrame(list(rows.values()), columns=RUN_COLUMNS)
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame.sort_values("started_at", ascending=False, ignore_index=True)


#: The most of a node's traceback and of its logs a row keeps (the end of a traceback names the error).
MAX_STORED_TRACEBACK = 20_000
MAX_STORED_LOG_CHARS = 200_000


def _node_row(run_id: str, o: NodeOutcome, position: int) -> tuple[Any, ...]:
    return (run_id, o.node, o.action, o.status, o.attempts, json.dumps(o.retry_messages), o.error,
            o.started_at, o.finished_at, json.dumps(o.notes), position, o.worker, o.reason, o.cached_from,
            _bounded_traceback(o.traceback), json.dumps(_bounded_logs(o.logs)) if o.logs else None)


def _bounded_traceback(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_STORED_TRACEBACK:
        return text
    return "… (start of the traceback not kept)\n" + text[-MAX_STORED_TRACEBACK:]


def _bounded_logs(lines: list[str]) -> list[str]:
    kept: list[str] = []
    size = 0
    for line in lines:
        size += len(line)
        if size > MAX_STORED_LOG_CHARS:
            kept.append(f"… {len(lines) - len(kept)} more lines not kept")
            break
        kept.append(line)
    return kept


def _outcome(fields: tuple[Any, ...], where: str) -> NodeOutcome:
    (node, action, status, attempts, retries, error, started, finished, notes, worker, reason, cached_from,
     traceback, logs) = fields
    try:
        retry_messages, note_list = json.loads(retries), json.loads(notes)
        log_lines = [] if logs is None else json.loads(logs)
        if (
            not isinstance(node, str) or not isinstance(action, str) or status not in _NODE_STATUSES
            or not isinstance(attempts, int) or not _texts(retry_messages) or not _texts(note_list)
            or not _times(started, finished) or not _texts(log_lines)
            or not all(v is None or isinstance(v, str) for v in (error, worker, reason, cached_from, traceback))
        ):
            raise ValueError("a field has the wrong type")
    except (ValueError, TypeError) as problem:
        raise StorageError(f"{where}: the row of node {node!r} is damaged: {_first_line(problem)}") from None
    return NodeOutcome(node, action, status, attempts, retry_messages, error, started, finished, note_list, worker,
                       reason=reason, cached_from=cached_from, traceback=traceback, logs=log_lines)


def _usage_rows(run_id: str, outcomes: Iterable[NodeOutcome]) -> list[tuple[Any, ...]]:
    """A ``dag_usage`` row for each node whose action reported usage."""
    return [(run_id, o.node, o.tokens, o.cost, json.dumps(list(o.models)))
            for o in outcomes if o.tokens or o.cost is not None or o.models]


def _add_stored_usage(outcomes: dict[str, NodeOutcome], fields: tuple[Any, ...], where: str) -> None:
    node, tokens, cost, models = fields
    try:
        names = json.loads(models)
        if (
            node not in outcomes or isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0
            or not (cost is None or (_times(cost) and cost >= 0)) or not _texts(names)
        ):
            raise ValueError("a field has the wrong type or its node is not in the workflow")
    except (ValueError, TypeError) as problem:
        raise StorageError(f"{where}: the usage row of node {node!r} is damaged: {_first_line(problem)}") from None
    outcome = outcomes[node]
    outcome.tokens, outcome.cost, outcome.models = tokens, cost, tuple(names)


def _adders_json(added_by: Mapping[str, str] | None, spec: WorkflowSpec) -> str | None:
    if not added_by:
        return None
    nodes = {node.id for node in spec.nodes}
    return json.dumps({node: adder for node, adder in added_by.items() if node in nodes})


def _load_adders(text: Any, nodes: set[str], where: str) -> dict[str, str]:
    if text is None:
        return {}
    try:
        adders = json.loads(text)
        if not isinstance(adders, dict) or not all(
            node in nodes and adder in nodes for node, adder in adders.items()
        ):
            raise ValueError("it names nodes that are not in its workflow")
    except (ValueError, TypeError) as problem:
        raise StorageError(f"{where}: its record of added nodes is damaged: {_first_line(problem)}") from None
    return adders


def _times(*values: Any) -> bool:
    return all(value is None or (isinstance(value, int | float) and not isinstance(value, bool)) for value in values)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _decode(fmt: Any, blob: Any, where: str) -> Any:
    try:
        if fmt == "json":
            return json.loads(blob)
        if fmt == "pickle":
            return pickle.loads(blob)
    except Exception as error:  # an unpicklable blob can raise anything its classes raise
        raise StorageError(f"{where} cannot be read: {type(error).__name__}: {_first_line(error)}") from None
    raise StorageError(f"{where} has an unknown format {fmt!r}")


def _first_line(error: BaseException) -> str:
    if isinstance(error, pydantic.ValidationError) and error.errors():
        first = error.errors()[0]
        return f"{'.'.join(map(str, first['loc'])) or 'the document'}: {first['msg']}"
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _encode(value: Any) -> tuple[str, bytes] | None:
    try:
        text = json.dumps(value)
        if json.loads(text) == value:  # tuples, int-keyed dicts, NaN... would come back changed
            return "json", text.encode()
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        return "pickle", pickle.dumps(value)
    except Exception:
        return None
