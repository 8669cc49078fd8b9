"""The store of reusable node results behind incremental runs.

One row per stored result, keyed by ``(workflow, node, fingerprint)``, with the parts
of its fingerprint (to say what changed) and the fingerprints of its outputs. Values
up to ``inline_limit`` bytes live in the SQLite file; bigger ones in a folder beside
it (``<db>-values/``): DataFrames as Parquet when pyarrow is installed, anything else
pickled. Pickles and Parquet files are read back as trusted input, like the run
store's: only ever point a database at files you wrote. ``max_cache_mb`` bounds the
stored size: the least recently used results go first.

Without a path the results live in memory, for the executor's lifetime.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import pickle
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from time import time
from typing import Any

from dagger_nb.errors import StorageError
from dagger_nb.storage import open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS dag_results (
    workflow TEXT NOT NULL, node TEXT NOT NULL, fingerprint TEXT NOT NULL, code TEXT NOT NULL,
    settings TEXT NOT NULL, inputs TEXT NOT NULL, outputs TEXT NOT NULL, run_id TEXT NOT NULL,
    created_at REAL NOT NULL, used_at REAL NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (workflow, node, fingerprint)
);
CREATE TABLE IF NOT EXISTS dag_result_values (
    workflow TEXT NOT NULL, node TEXT NOT NULL, fingerprint TEXT NOT NULL, key TEXT NOT NULL,
    format TEXT NOT NULL, value BLOB, file TEXT, PRIMARY KEY (workflow, node, fingerprint, key)
);
"""

#: values bigger than this (encoded) go to the folder beside the database
INLINE_LIMIT = 256 * 1024


@dataclass(slots=True)
class StoredResult:
    """One node's stored result: its fingerprint and its parts, where it came from, its values."""

    workflow: str
    node: str
    fingerprint: str
    code: str
    settings: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    run_id: str
    used_at: float = 0.0
    size: int = 0
    #: key -> (format, inline bytes or None, file name or None), as :meth:`ResultStore.save` stored them
    values: dict[str, tuple[str, bytes | None, str | None]] = field(default_factory=dict)


class ResultStore:
    """Stored node results in a SQLite file (or in memory); safe to call from worker threads."""

    def __init__(
        self, path: str | os.PathLike[str] | None, *, max_cache_mb: float | None = None,
        inline_limit: int = INLINE_LIMIT,
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.folder = f"{self.path}-values" if self.path is not None else None
        self.max_bytes = None if max_cache_mb is None else int(max_cache_mb * 1024 * 1024)
        self.inline_limit = inline_limit if self.folder is not None else sys.maxsize
        self._lock = threading.Lock()
        self.closed = False
        if self.path is None:
            self._connection = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._connection.executescript(SCHEMA)
        else:
            self._connection = open_database(self.path, schema=SCHEMA)
            try:
                self._sweep()
            except BaseException:
                self._connection.close()
                raise

    @property
    def where(self) -> str:
        """The file, for messages."""
        return self.path or "memory"

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._connection.close()

    # -- reading -----------------------------------------------------------------------------

    def results(self, workflow: str) -> dict[str, list[StoredResult]]:
        """Every stored result of ``workflow`` (without its values), by node, the most recently used first."""
        with self._use("read the stored results of workflow", workflow) as connection:
            rows = connection.execute(
                "SELECT node, fingerprint, code, settings, inputs, outputs, run_id, used_at, size "
                "FROM dag_results WHERE workflow = ? ORDER BY used_at DESC", (workflow,)
            ).fetchall()
        found: dict[str, list[StoredResult]] = {}
        for node, fingerprint, code, settings, inputs, outputs, run_id, used_at, size in rows:
            try:
                result = StoredResult(workflow, node, fingerprint, code, settings, json.loads(inputs),
                                      json.loads(outputs), run_id, used_at, size)
            except (TypeError, ValueError):
                continue  # a damaged row is no reusable result: the node runs
            found.setdefault(node, []).append(result)
        return found

    def load_values(self, result: StoredResult) -> dict[str, Any]:
        """The values of ``result``; :class:`StorageError` naming what cannot be read (or what is gone)."""
        with self._use("read a stored result of workflow", result.workflow) as connection:
            rows = connection.execute(
                "SELECT key, format, value, file FROM dag_result_values WHERE workflow = ? AND node = ? "
                "AND fingerprint = ?", (result.workflow, result.node, result.fingerprint)
            ).fetchall()
        missing = set(result.outputs) - {row[0] for row in rows}
        if missing:  # cleared or evicted since the run started
            raise StorageError(f"stored result of node '{result.node}' (workflow '{result.workflow}') in "
                               f"'{self.where}' is gone (cleared or evicted)")
        loaded = {}
        for key, fmt, blob, file in rows:
            where = f"stored result of node '{result.node}' (workflow '{result.workflow}'), value '{key}'"
            loaded[key] = self._decode(fmt, blob, file, where)
        return loaded

    def _decode(self, fmt: str, blob: bytes | None, file: str | None, where: str) -> Any:
        try:
            if file is not None:
                assert self.folder is not None
                with open(os.path.join(self.folder, file), "rb") as handle:
                    blob = handle.read()
            if fmt == "json" and blob is not None:
                return json.loads(blob)
            if fmt == "pickle" and blob is not None:
                return pickle.loads(blob)
            if fmt == "parquet" and blob is not None:
                import pandas as pd

                return pd.read_parquet(io.BytesIO(blob))
        except Exception as error:  # a pickle can raise anything its classes raise
            raise StorageError(f"{where} in '{self.where}' cannot be read: {type(error).__name__}: {error}") from None
        raise StorageError(f"{where} in '{self.where}' has an unknown format {fmt!r}")

    # -- writing -----------------------------------------------------------------------------

    def save(self, result: StoredResult, values: dict[str, Any]) -> None:
        """Store ``result`` with ``values`` (replacing a result of the same fingerprint), then evict
        the least recently used results beyond ``max_cache_mb``. :class:`StorageError` if a value
        cannot be encoded or written."""
        encoded = {key: self._encode(value, f"output '{key}' of node '{result.node}'") for key, value in values.items()}
        files: list[tuple[str, bytes]] = []
        size = 0
        for key, (fmt, blob) in encoded.items():
            size += len(blob)
            if len(blob) > self.inline_limit:
                name = _file_name(result, key, fmt)
                files.append((name, blob))
                result.values[key] = (fmt, None, name)
            else:
                result.values[key] = (fmt, blob, None)
        result.size = size
        result.used_at = now = time()
        try:
            for name, blob in files:
                self._write_file(name, blob)
            with self._use("store a result of workflow", result.workflow) as connection:
                connection.execute("BEGIN IMMEDIATE")
                old_files = self._delete(connection, result.workflow, result.node, result.fingerprint)
                connection.execute(
                    "INSERT INTO dag_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (result.workflow, result.node, result.fingerprint, result.code, result.settings,
                     json.dumps(result.inputs), json.dumps(result.outputs), result.run_id, now, now, size),
                )
                connection.executemany(
                    "INSERT INTO dag_result_values VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(result.workflow, result.node, result.fingerprint, key, fmt, blob, file)
                     for key, (fmt, blob, file) in result.values.items()],
                )
                connection.execute("COMMIT")
        except StorageError:
            self._remove_files({name for name, _ in files})  # new names: no row refers to them
            raise
        self._remove_files(old_files)
        self.evict()

    def touch(self, workflow: str, used: list[tuple[str, str]]) -> None:
        """Mark results ``(node, fingerprint)`` of ``workflow`` as used now (for eviction)."""
        if not used:
            return
        now = time()
        with self._use("mark results used in workflow", workflow) as connection:
            connection.executemany(
                "UPDATE dag_results SET used_at = ? WHERE workflow = ? AND node = ? AND fingerprint = ?",
                [(now, workflow, node, fingerprint) for node, fingerprint in used],
            )

    def evict(self) -> int:
        """Drop the least recently used results until the store fits ``max_cache_mb``; how many went."""
        if self.max_bytes is None:
            return 0
        removed_files: list[str] = []
        dropped = 0
        with self._use("evict results from", self.where) as connection:
            total = connection.execute("SELECT COALESCE(SUM(size), 0) FROM dag_results").fetchone()[0]
            if total <= self.max_bytes:
                return 0
            connection.execute("BEGIN IMMEDIATE")
            for workflow, node, fingerprint, size in connection.execute(
                "SELECT workflow, node, fingerprint, size FROM dag_results ORDER BY used_at"
            ).fetchall():
                if total <= self.max_bytes:
                    break
                removed_files += self._delete(connection, workflow, node, fingerprint)
                total -= size
                dropped += 1
            connection.execute("COMMIT")
        self._remove_files(removed_files)
        return dropped

    def clear(self, workflow: str | None = None, node: str | None = None) -> int:
        """Forget the stored results of every workflow, of ``workflow``, or of one ``node`` of it;
        returns how many went."""
        where: str = ""
        params: tuple[str, ...] = ()
        if workflow is not None:
            where, params = " WHERE workflow = ?", (workflow,)
            if node is not None:
                where, params = " WHERE workflow = ? AND node = ?", (workflow, node)
        with self._use("clear stored results in", self.where) as connection:
            connection.execute("BEGIN IMMEDIATE")
            files = [row[0] for row in connection.execute(
                f"SELECT file FROM dag_result_values{where} AND file IS NOT NULL" if where
                else "SELECT file FROM dag_result_values WHERE file IS NOT NULL", params)]
            count = connection.execute(f"DELETE FROM dag_results{where}", params).rowcount
            connection.execute(f"DELETE FROM dag_result_values{where}", params)
            connection.execute("COMMIT")
        self._remove_files(files)
        return count

    def total_bytes(self) -> int:
        """The stored size of every result (encoded values)."""
        with self._use("measure", self.where) as connection:
            return int(connection.execute("SELECT COALESCE(SUM(size), 0) FROM dag_results").fetchone()[0])

    # -- plumbing ----------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Remove files of the values folder no stored result refers to (a process killed between
        writing a value's file and committing its row leaves one)."""
        if self.folder is None or not os.path.isdir(self.folder):
            return
        with self._use("list the stored values of", self.where) as connection:
            known = {row[0] for row in connection.execute("SELECT file FROM dag_result_values WHERE file IS NOT NULL")}
        self._remove_files({name for name in os.listdir(self.folder) if name not in known})

    def _delete(self, connection: sqlite3.Connection, workflow: str, node: str, fingerprint: str) -> list[str]:
        key = (workflow, node, fingerprint)
        files = [row[0] for row in connection.execute(
            "SELECT file FROM dag_result_values WHERE workflow = ? AND node = ? AND fingerprint = ? "
            "AND file IS NOT NULL", key)]
        connection.execute("DELETE FROM dag_results WHERE workflow = ? AND node = ? AND fingerprint = ?", key)
        connection.execute("DELETE FROM dag_result_values WHERE workflow = ? AND node = ? AND fingerprint = ?", key)
        return files

    def _encode(self, value: Any, what: str) -> tuple[str, bytes]:
        try:
            text = json.dumps(value)
            if len(text) <= self.inline_limit and json.loads(text) == value:
                return "json", text.encode()
        except (TypeError, ValueError, RecursionError):
            pass
        pd = sys.modules.get("pandas")
        if (self.folder is not None and pd is not None and isinstance(value, pd.DataFrame) and _has_pyarrow()
                and int(value.memory_usage(deep=False).sum()) > self.inline_limit):
            buffer = io.BytesIO()
            try:
                value.to_parquet(buffer)
                return "parquet", buffer.getvalue()
            except Exception:  # what Parquet cannot hold (mixed objects) is pickled below
                pass
        try:
            return "pickle", pickle.dumps(value, protocol=5)
        except Exception as error:  # whatever a class's __reduce__ raises
            raise StorageError(f"{what} cannot be stored: {type(error).__name__}: {error}") from None

    def _write_file(self, name: str, blob: bytes) -> None:
        assert self.folder is not None
        try:
            os.makedirs(self.folder, exist_ok=True)
            target = os.path.join(self.folder, name)
            partial = f"{target}.partial"
            with open(partial, "wb") as handle:
                handle.write(blob)
            os.replace(partial, target)
        except OSError as error:
            raise StorageError(f"cannot write a stored value to '{self.folder}': {error}") from None

    def _remove_files(self, names: list[str] | set[str]) -> None:
        if self.folder is None:
            return
        for name in names:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.folder, name))

    @contextlib.contextmanager
    def _use(self, what: str, subject: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self.closed:
                raise StorageError(f"cannot {what} '{subject}': the result store '{self.where}' is closed")
            try:
                yield self._connection
            except sqlite3.Error as error:
                if self._connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._connection.execute("ROLLBACK")
                raise StorageError(f"cannot {what} '{subject}' in '{self.where}': {error}") from None


def _file_name(result: StoredResult, key: str, fmt: str) -> str:
    """A name no other save uses, so a save that fails (or replaces a result) never overwrites or
    removes a file a stored row still refers to."""
    name = hashlib.blake2b(f"{result.workflow}\0{result.node}\0{result.fingerprint}\0{key}".encode(),
                           digest_size=16).hexdigest()
    return f"{name}-{uuid.uuid4().hex[:16]}.{fmt}"


def _has_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None
