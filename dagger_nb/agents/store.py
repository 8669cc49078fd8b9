"""SQLite persistence of tasks and job statuses.

Each task is one row holding its JSON; a batch of changed tasks is written in
one transaction, so the runner pays one commit per scheduling round instead of
one per change. Writes run on the event loop's thread: a commit in WAL mode
with ``synchronous=NORMAL`` costs less than a hop to a worker thread, so moving
them off the loop would make every round slower without making the loop more
responsive.

The slow part of WAL mode is the checkpoint (copying the log into the database
file, with an fsync), which SQLite normally runs inside whichever commit
crosses its page threshold, stalling the loop for that commit. We turn
that off and let a background thread with its own connection checkpoint
(``PASSIVE``: it never blocks the writer) once a few megabytes were written.
A committed transaction is durable against a crash of the process either way.

Rows are keyed by creation order (the rowid), so a change updates its row in
place and tasks created together share pages, where keying by the text task id
with ``INSERT OR REPLACE`` would delete and re-insert the row (and its index
entries) on every change.

What a running job changes (status, reason, retry count, time of the change,
output) has its own columns, and so has the creation time; every other field
is in one JSON column, ``data``, written when the task is added or changed
through the manager. So starting a task writes four small values instead of
re-encoding the whole task, and completing it adds the output's JSON, which
the runner encodes anyway to check that the output can be stored. (Binding one
column per field costs more than encoding them as one JSON object, so the
fields that rarely change stay in ``data``; the times are integers because
writing an aware ``datetime`` as ISO text costs more than the rest of the row.)
A database written before these columns existed is upgraded when opened; its
rows keep those fields in ``data`` until they next change.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from dagger_nb._traceback import printable
from dagger_nb.agents.model import JobStatus, Task, TaskOutput, TaskRecord
from dagger_nb.errors import StorageError
from dagger_nb.storage import ProcessLock, add_missing_columns, open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_tasks (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    status_reason TEXT,
    retry_count INTEGER,
    updated_at_us INTEGER,
    output TEXT,
    created_at_us INTEGER
);
CREATE TABLE IF NOT EXISTS agent_jobs (
    job_id TEXT PRIMARY KEY,
    status TEXT NOT NULL
);
"""

#: Set on top of :data:`dagger_nb.storage.PRAGMAS`: checkpoints run in a background thread.
STORE_PRAGMAS = ("PRAGMA wal_autocheckpoint=0",)

_ADDED_COLUMNS = {
    "status_reason": "TEXT", "retry_count": "INTEGER", "updated_at_us": "INTEGER", "output": "TEXT",
    "created_at_us": "INTEGER",
}

# NULL is written into the statement rather than bound: for every None it binds, sqlite3
# looks for an adapter and builds (and drops) an AttributeError. So each statement comes
# in one variant per combination of the columns that may be NULL (_UPSERT, _UPDATE).
_TASK_COLUMNS = (
    "seq", "task_id", "job_id", "status", "data", "status_reason", "retry_count", "updated_at_us", "output",
    "created_at_us",
)
_STATE_COLUMNS = ("status", "status_reason", "retry_count", "updated_at_us", "output")


def _upsert_task(no_reason: bool, no_output: bool) -> str:
    null = {"status_reason": no_reason, "output": no_output}
    values = ", ".join("NULL" if null.get(column) else "?" for column in _TASK_COLUMNS)
    updates = ", ".join(f"{column} = excluded.{column}" for column in _TASK_COLUMNS[3:])
    return (
        f"INSERT INTO agent_tasks ({', '.join(_TASK_COLUMNS)}) VALUES ({values}) "
        f"ON CONFLICT(seq) DO UPDATE SET {updates}"
    )


def _update_state(no_reason: bool, output_kept: bool) -> str:
    columns = _STATE_COLUMNS[:-1] if output_kept else _STATE_COLUMNS
    updates = ", ".join(
        f"{column} = {'NULL' if no_reason and column == 'status_reason' else '?'}" for column in columns
    )
    return f"UPDATE agent_tasks SET {updates} WHERE seq = ?"


_VARIANTS = ((True, True), (True, False), (False, True), (False, False))
_UPSERT = {variant: _upsert_task(*variant) for variant in _VARIANTS}  # by (no reason, no output)
_UPDATE = {variant: _update_state(*variant) for variant in _VARIANTS}  # by (no reason, output kept)

#: A task's whole row: ``(statement, parameters)`` (its columns but the NULL ones).
Row = tuple[str, tuple[Any, ...]]
#: New state columns of a task: ``(statement, parameters, output column's new text or UNCHANGED)``.
StateRow = tuple[str, tuple[Any, ...], Any]

#: ``output`` of :meth:`TaskStore.state_row` when the task's output did not change.
UNCHANGED: Any = object()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def microseconds(moment: datetime) -> int:
    """``moment`` as whole microseconds since the epoch (exact, unlike a float timestamp)."""
    return (moment - _EPOCH) // _MICROSECOND


def output_json(output: TaskOutput | None) -> str | None:
    """The ``output`` column's text for ``output``."""
    return None if output is None else _OUTPUT_JSON(output).decode()


def _data_fields(task: TaskRecord) -> dict[str, Any]:
    """The fields of ``task`` the ``data`` column holds: all but those with columns of
    their own (what a running job changes, and the creation time)."""
    fields: dict[str, Any] = {
        "job_id": task.job_id,
        "task_id": task.task_id,
        "parent_task_id": task.parent_task_id,
        "description": task.description,
        "acceptance_criteria": task.acceptance_criteria,
        "agent": task.agent,
        "dependencies": task.dependencies,
        "input": task.input,
        # as its text: pydantic serialises an Enum member through Python, which cost as
        # much as the rest of the row
        "task_type": task.task_type._value_,
        "timeout": task.timeout,
        "max_retries": task.max_retries,
        "summary": task.summary,
    }
    if task.tokens or task.cost is not None or task.models:  # only then: an older version reads the rest
        fields.update(tokens=task.tokens, cost=task.cost, models=list(task.models))
    return fields


# Pydantic's serializers called directly: ``model_dump_json`` wraps them in a Python
# function whose argument handling costs more than the encoding of a small output.
_DATA_JSON = TypeAdapter(dict[str, Any]).serializer.to_json
_OUTPUT_JSON = TaskOutput.__pydantic_serializer__.to_json


class TaskStore:
    """The task manager's SQLite file, locked against other live processes while open."""

    def __init__(self, path: str | os.PathLike[str], *, on_takeover: Callable[[], None] | None = None) -> None:
        self.path = str(path)
        self._lock = ProcessLock(path, owner="TaskManager", on_takeover=on_takeover)
        try:
            self._connection = open_database(path, schema=SCHEMA)
        except BaseException:
            self._lock.release()
            raise
        self._mutex = threading.Lock()
        try:
            for pragma in STORE_PRAGMAS:
                self._connection.execute(pragma)
            # save() reuses one cursor: Connection.execute makes a new one per statement
            self._cursor = self._connection.cursor()
            add_missing_columns(self._connection, "agent_tasks", _ADDED_COLUMNS)  # a file from before them
        except sqlite3.Error as error:  # a damaged file, or another program's table of that name
            self._connection.close()
            self._lock.release()
            raise StorageError(f"cannot open tasks in '{self.path}': {error}") from error
        self._checkpointer = _Checkpointer(self.path)
        self._written = 0
        self._encoded: dict[int, tuple[object, Row]] = {}
        self._stamp: tuple[datetime | None, int] = (None, 0)  # the last time converted, and its value

    def load(self) -> tuple[list[tuple[int, TaskRecord]], dict[str, JobStatus]]:
        """Every stored ``(seq, task)`` in creation order, and every job's last status."""
        with self._mutex:
            try:
                rows = self._connection.execute(
                    "SELECT seq, data, status, status_reason, retry_count, updated_at_us, output, created_at_us "
                    "FROM agent_tasks ORDER BY seq"
                ).fetchall()
                jobs = self._connection.execute("SELECT job_id, status FROM agent_jobs").fetchall()
            except sqlite3.Error as error:
                raise StorageError(f"cannot read tasks from '{self.path}': {error}") from error
        tasks = [(row[0], self._task_of(row)) for row in rows]
        _check_links(self.path, tasks)
        statuses = {}
        for job_id, status in jobs:
            try:
                statuses[job_id] = JobStatus(status)
            except ValueError:
                known = ", ".join(member.value for member in JobStatus)
                raise StorageError(
                    f"cannot read tasks from '{self.path}': job {job_id!r} has unknown status {status!r} "
                    f"(known: {known})"
                ) from None
        return tasks, statuses

    def _task_of(self, row: tuple[Any, ...]) -> TaskRecord:
        """The task stored in ``row``; :class:`StorageError` naming the file and the row if it is damaged."""
        seq, data, status, reason, retry_count, updated_at_us, output, created_at_us = row
        part = "data"
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict):
                raise TypeError(f"expected a JSON object, got {type(fields).__name__}")
            if created_at_us is not None:  # else a row from before that column: in data
                part = "created_at_us"
                fields["created_at"] = _EPOCH + created_at_us * _MICROSECOND
            if updated_at_us is not None:  # else a row written before the state columns: all in data
                part = "updated_at_us"
                updated_at = _EPOCH + updated_at_us * _MICROSECOND
                part = "output"
                fields.update(
                    status=status,
                    status_reason=reason,
                    retry_count=retry_count,
                    updated_at=updated_at,
                    output=None if output is None else json.loads(output),
                )
            part = "task"
            return TaskRecord.of(Task.model_validate(fields))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}" for e in error.errors()[:5])
            raise StorageError(f"cannot read tasks from '{self.path}': row {seq}{_named(data)}: {problems}") from None
        except (ValueError, TypeError, OverflowError) as error:
            raise StorageError(
                f"cannot read tasks from '{self.path}': row {seq}{_named(data)}: {part} is damaged: {error}"
            ) from None

    def encode(self, seq: int, task: TaskRecord) -> Row:
        """The whole row for ``task`` (kept until the task changes); ``ValueError`` if it is not JSON-able."""
        cached = self._encoded.get(seq)
        if cached is not None and cached[0] is task.updated_at:
            return cached[1]
        try:
            data = _DATA_JSON(_data_fields(task)).decode()
            output = output_json(task.output)
        except PydanticSerializationError as error:
            raise ValueError(str(error)) from None
        reason = task.status_reason
        values: tuple[Any, ...] = (
            seq, task.task_id, task.job_id, str(task.status), data,
            *(() if reason is None else (reason,)), task.retry_count, self._microseconds(task.updated_at),
            *(() if output is None else (output,)), self._microseconds(task.created_at),
        )
        row = (_UPSERT[reason is None, output is None], values)
        self._encoded[seq] = (task.updated_at, row)
        return row

    def state_row(self, seq: int, task: TaskRecord, output: Any) -> StateRow:
        """The state columns of ``task`` as :meth:`save` writes them; ``output`` is the output
        column's new text, or :data:`UNCHANGED` to keep the stored one."""
        status, reason = str(task.status), task.status_reason
        retry_count, updated = task.retry_count, self._microseconds(task.updated_at)
        kept = output is UNCHANGED
        statement = _UPDATE[reason is None, kept]
        # one tuple literal per variant rather than one built up: this runs twice per task
        if reason is None:
            if kept:
                return statement, (status, retry_count, updated, seq), output
            return statement, (status, retry_count, updated, output, seq), output
        if kept:
            return statement, (status, reason, retry_count, updated, seq), output
        return statement, (status, reason, retry_count, updated, output, seq), output

    def save(
        self,
        tasks: Iterable[tuple[int, TaskRecord]],
        jobs: Iterable[tuple[str, JobStatus]] = (),
        *,
        states: Collection[StateRow] = (),
    ) -> None:
        """Write, in one committed transaction: whole ``(seq, task)`` rows, ``(job_id, status)``
        pairs, and ``states``, rows from :meth:`state_row` that change only the state columns."""
        task_rows = []
        for seq, task in tasks:
            try:
                task_rows.append(self.encode(seq, task))
            except ValueError as error:
                self._encoded.clear()
                raise StorageError(printable(
                    f"cannot write tasks to '{self.path}': task '{task.task_id}' cannot be stored as JSON: {error}"
                )) from None
        self._encoded.clear()
        self._written += _COMMIT_BYTES * (1 + (len(task_rows) + len(states)) // 8)
        job_rows = [(job_id, str(status)) for job_id, status in jobs]
        with self._mutex:
            cursor = self._cursor
            try:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    if task_rows:
                        for statement, rows in _by_statement(task_rows).items():
                            cursor.executemany(statement, rows)
                    for statement, values, _ in states:
                        cursor.execute(statement, values)
                    if job_rows:
                        cursor.executemany("INSERT OR REPLACE INTO agent_jobs (job_id, status) VALUES (?, ?)", job_rows)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            except sqlite3.DatabaseError as error:
                raise StorageError(f"cannot write tasks to '{self.path}': {error}") from error
            except ValueError as error:  # text SQLite cannot take (a lone surrogate), a number too big
                raise StorageError(printable(
                    f"cannot write tasks to '{self.path}': {_culprit(task_rows, states)} cannot be stored: {error}"
                )) from None
        if self._written >= CHECKPOINT_BYTES:
            self._written = 0
            self._checkpointer.request()

    def _microseconds(self, moment: datetime) -> int:
        # The changes of one scheduling round share one time: convert it once.
        if moment is not self._stamp[0]:
            self._stamp = (moment, microseconds(moment))
        return self._stamp[1]

    def close(self) -> None:
        """Stop the checkpointer, close the connection (a final checkpoint) and release the lock."""
        self._checkpointer.stop()
        with self._mutex:
            self._connection.close()
        self._lock.release()


def _culprit(task_rows: list[Row], states: Collection[StateRow]) -> str:
    """Which task of a failed write holds a value SQLite cannot take (for the message)."""
    for _, values in task_rows:
        if any(not _storable(value) for value in values):
            return f"task {printable(repr(values[1]))}"
    for _, values, _ in states:
        if any(not _storable(value) for value in values):
            return f"the task of row {values[-1]}"
    return "a task"


def _storable(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    elif isinstance(value, int):
        return -(2**63) <= value < 2**63
    return True


def _named(data: object) -> str:
    """`` (task 'x')`` when the damaged row's data still names its task."""
    try:
        task_id = json.loads(data)["task_id"]  # type: ignore[arg-type]
    except Exception:  # a best effort, for the message only
        return ""
    return f" (task {task_id!r})" if isinstance(task_id, str) else ""


def _check_links(path: str, tasks: list[tuple[int, TaskRecord]]) -> None:
    """Every task id once, every dependency and parent a task of the file."""
    seen: dict[str, int] = {}
    for seq, task in tasks:
        if task.task_id in seen:
            raise StorageError(
                f"cannot read tasks from '{path}': row {seq}: task id {task.task_id!r} is also row {seen[task.task_id]}"
            )
        seen[task.task_id] = seq
    for seq, task in tasks:
        missing = [dep for dep in task.dependencies if dep not in seen]
        if task.parent_task_id is not None and task.parent_task_id not in seen:
            missing.append(task.parent_task_id)
        if missing:
            raise StorageError(
                f"cannot read tasks from '{path}': row {seq} (task {task.task_id!r}) refers to tasks the file "
                f"does not hold: {', '.join(map(repr, missing[:5]))}"
            )


def _by_statement(rows: list[Row]) -> dict[str, list[tuple[Any, ...]]]:
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for statement, values in rows:
        grouped.setdefault(statement, []).append(values)
    return grouped


#: Bytes written (roughly) between two background checkpoints.
CHECKPOINT_BYTES = 4 * 1024 * 1024
_COMMIT_BYTES = 8192  # a commit rewrites a couple of pages per few rows


class _Checkpointer:
    """A background thread that checkpoints the WAL when asked, at most one at a time."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Checkpoint soon (starting the thread on first use)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dagger-nb checkpoint", daemon=True)
            self._thread.start()
        self._wanted.set()

    def stop(self) -> None:
        """Finish the running checkpoint, if any, and end the thread."""
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        with closing(sqlite3.connect(self._path, check_same_thread=False)) as connection:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                # busy or locked: the next request (or closing the store) checkpoints
                with contextlib.suppress(sqlite3.DatabaseError):
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
