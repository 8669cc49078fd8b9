"""ProcessLock: one live process per database file, whatever path leads to it, and a
re-run notebook cell takes the file over from the earlier instance in the same process."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagger_nb import storage
from dagger_nb.errors import DaggerWarning, DatabaseInUse
from dagger_nb.storage import ProcessLock

ROOT = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent(
    """
    import sys
    from dagger_nb.storage import ProcessLock
    lock = ProcessLock(sys.argv[1], owner="Holder")
    print("ready", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin (or kills us)
    lock.release()
    """
)


READ_T = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT x FROM t').fetchall())"


class Holder:
    """Another process holding the lock on ``path`` until stopped."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until the lock is held
        assert line.strip() == "ready", f"holder failed to start: {line!r}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        if not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # killed already
                self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def holder_of(tmp_path: Path) -> Iterator[type[Holder]]:
    started: list[Holder] = []

    class Tracked(Holder):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            started.append(self)

    yield Tracked
    for holder in started:
        holder.stop()


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path, holder_of: type[Holder]) -> None:
    database = tmp_path / "jobs.db"
    holder = holder_of(database)
    with pytest.raises(DatabaseInUse, match=rf"in use by another live process \(PID {holder.pid}\)") as caught:
        ProcessLock(database, owner="TaskManager")
    assert caught.value.pid == holder.pid
    assert str(database) in str(caught.value)


def test_a_symlink_to_a_held_file_is_refused(tmp_path: Path, holder_of: type[Holder]) -> None:
    database = tmp_path / "jobs.db"
    link = tmp_path / "elsewhere" / "link.db"
    link.parent.mkdir()
    link.symlink_to(database)
    holder = holder_of(database)
    with pytest.raises(DatabaseInUse) as caught:
        ProcessLock(link, owner="TaskManager")
    assert caught.value.pid == holder.pid
    message = str(caught.value)
    assert str(link) in message and os.path.realpath(database) in message


def test_a_hard_link_to_a_held_file_is_refused(tmp_path: Path, holder_of: type[Holder]) -> None:
    database = tmp_path / "jobs.db"
    holder = holder_of(database)
    link = tmp_path / "other-name.db"
    os.link(database, link)
    with pytest.raises(DatabaseInUse) as caught:
        ProcessLock(link, owner="PubSub")
    assert caught.value.pid == holder.pid


def test_a_held_file_is_refused_through_a_symlink_to_its_folder(tmp_path: Path, holder_of: type[Holder]) -> None:
    (tmp_path / "real").mkdir()
    database = tmp_path / "real" / "jobs.db"
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    holder = holder_of(database)
    with pytest.raises(DatabaseInUse) as caught:
        ProcessLock(tmp_path / "alias" / "jobs.db", owner="TaskManager")
    assert caught.value.pid == holder.pid


def test_the_pid_comes_from_the_note_beside_the_file_without_proc_locks(
    tmp_path: Path, holder_of: type[Holder], monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "jobs.db"
    holder = holder_of(database)
    monkeypatch.setattr(storage, "_LOCK_TABLE", str(tmp_path / "no-such-table"))
    with pytest.raises(DatabaseInUse) as caught:
        ProcessLock(tmp_path / "." / "jobs.db", owner="TaskManager")
    assert caught.value.pid == holder.pid


def test_pid_unknown_only_when_nothing_says(
    tmp_path: Path, holder_of: type[Holder], monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "jobs.db"
    holder_of(database)
    Path(f"{database}.lock").unlink()  # the note gone, and no /proc/locks
    monkeypatch.setattr(storage, "_LOCK_TABLE", str(tmp_path / "no-such-table"))
    with pytest.raises(DatabaseInUse, match=r"\(PID unknown\)") as caught:
        ProcessLock(database, owner="TaskManager")
    assert caught.value.pid is None


def test_a_lock_dies_with_a_sigkilled_holder(tmp_path: Path, holder_of: type[Holder]) -> None:
    database = tmp_path / "jobs.db"
    holder = holder_of(database)
    with pytest.raises(DatabaseInUse):
        ProcessLock(database, owner="TaskManager")
    holder.kill()
    lock = ProcessLock(database, owner="TaskManager")  # the stale PID note does not matter
    assert lock.held
    lock.release()


def test_release_is_idempotent_and_lets_another_process_in(tmp_path: Path, holder_of: type[Holder]) -> None:
    database = tmp_path / "jobs.db"
    lock = ProcessLock(database, owner="TaskManager")
    lock.release()
    lock.release()
    assert not lock.held
    holder = holder_of(database)  # would block at "ready" forever if still held: it raises instead
    with pytest.raises(DatabaseInUse):
        ProcessLock(database, owner="TaskManager")
    holder.stop()
    ProcessLock(database, owner="TaskManager").release()


def test_the_file_is_created_and_sqlite_works_while_held(tmp_path: Path) -> None:
    database = tmp_path / "new.db"
    lock = ProcessLock(database, owner="TaskManager")
    assert database.exists()
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE t (x)")
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO t VALUES (1)")
    connection.execute("COMMIT")
    reader = subprocess.run(
        [sys.executable, "-c", READ_T, str(database)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert reader.stdout.strip() == "[(1,)]"  # another process still reads the held file
    connection.close()
    lock.release()


def test_a_rerun_cell_takes_the_file_over(tmp_path: Path) -> None:
    database = tmp_path / "jobs.db"
    closed: list[str] = []
    first = ProcessLock(database, owner="TaskManager", on_takeover=lambda: closed.append("first"))
    with pytest.warns(
        DaggerWarning,
        match=r"TaskManager took over '.*jobs\.db' from an earlier TaskManager in this process; "
        "the earlier one was closed",
    ):
        second = ProcessLock(database, owner="TaskManager", on_takeover=lambda: closed.append("second"))
    assert closed == ["first"]
    assert second.held and not first.held
    first.release()  # the earlier store closing late must not drop the new one's lock
    probe = subprocess.run(
        [sys.executable, "-c", HOLDER, str(database)],
        input="",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert "DatabaseInUse" in probe.stderr and f"PID {os.getpid()}" in probe.stderr
    second.release()
    assert closed == ["first"]


def test_a_take_over_through_a_link_is_the_same_file(tmp_path: Path) -> None:
    database = tmp_path / "jobs.db"
    link = tmp_path / "link.db"
    link.symlink_to(database)
    closed: list[bool] = []
    first = ProcessLock(database, owner="PubSub", on_takeover=lambda: closed.append(True))
    with pytest.warns(DaggerWarning, match="took over"):
        second = ProcessLock(link, owner="PubSub")
    assert closed == [True] and not first.held
    second.release()


def test_a_take_over_still_happens_when_closing_the_earlier_one_fails(tmp_path: Path) -> None:
    database = tmp_path / "jobs.db"

    def broken() -> None:
        raise RuntimeError("flush failed")

    first = ProcessLock(database, owner="PubSub", on_takeover=broken)
    with pytest.warns(DaggerWarning) as warned:
        second = ProcessLock(database, owner="PubSub")
    messages = [str(warning.message) for warning in warned]
    assert any("flush failed" in message for message in messages)
    assert any("took over" in message for message in messages)
    assert second.held and not first.held
    second.release()


def test_a_forked_child_does_not_inherit_the_parents_hold(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import os, sys
        from dagger_nb.errors import DatabaseInUse
        from dagger_nb.storage import ProcessLock
        lock = ProcessLock(sys.argv[1], owner="Parent")
        child = os.fork()
        if child == 0:
            try:
                ProcessLock(sys.argv[1], owner="Child")
            except DatabaseInUse as error:
                os._exit(0 if error.pid == os.getppid() else 2)
            os._exit(1)
        _, status = os.waitpid(child, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "jobs.db")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "0", result.stderr


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counting descriptors needs /proc/self/fd")
def test_descriptors_live_only_as_long_as_their_locks(tmp_path: Path, holder_of: type[Holder]) -> None:
    before = _open_descriptors()
    for number in range(300):  # a long-lived kernel opening many files
        ProcessLock(tmp_path / f"{number}.db", owner="TaskManager").release()
    held = tmp_path / "held.db"
    holder_of(held)
    after_holder = _open_descriptors()
    for _ in range(50):
        with pytest.raises(DatabaseInUse):
            ProcessLock(held, owner="TaskManager")
    first = ProcessLock(tmp_path / "mine.db", owner="PubSub")
    with pytest.warns(DaggerWarning, match="took over"):
        second = ProcessLock(tmp_path / "mine.db", owner="PubSub")
    assert _open_descriptors() == after_holder + 1  # the one lock held here
    first.release()
    second.release()
    assert _open_descriptors() == after_holder
    assert after_holder - before <= 3  # the holder's pipes only
