"""The stores' process lock as a user meets it: re-running a notebook cell that opens a store
takes the file over from the earlier instance, and a link to a file another process holds is
refused with that process's PID."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import dagger_nb
from dagger_nb.errors import DaggerWarning, DatabaseInUse
from dagger_nb.storage import ProcessLock

ROOT = Path(__file__).resolve().parents[2]

TAKE_OVER = r"{owner} took over '.*{name}' from an earlier {owner} in this process; the earlier one was closed"


def stored_statuses(db: Path) -> dict[str, str]:
    """Task statuses read straight from the file, as another process would."""
    connection = sqlite3.connect(db)
    try:
        return dict(connection.execute("SELECT task_id, status FROM agent_tasks").fetchall())
    finally:
        connection.close()


def echo_registry() -> dagger_nb.TaskAgentRegistry:
    registry = dagger_nb.TaskAgentRegistry()
    registry.register("echo", lambda input, ctx: input)
    return registry


# -- a re-run cell -------------------------------------------------------------------------


def test_rerunning_a_task_manager_cell_takes_the_file_over(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    registry = echo_registry()
    manager = dagger_nb.TaskManager(db, registry=registry)  # the cell, run once ...
    manager.add_task("job", "first", "echo", {"n": 1}, task_id="first")
    with pytest.warns(DaggerWarning, match=TAKE_OVER.format(owner="TaskManager", name=r"jobs\.db")) as caught:
        manager = dagger_nb.TaskManager(db, registry=registry)  # ... and again
    assert caught[0].filename == __file__  # the warning points at the cell, not at dagger_nb
    assert [task.task_id for task in manager.tasks("job")] == ["first"]
    manager.add_task("job", "second", "echo", {"n": 2}, task_id="second")
    report = manager.run_sync("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert stored_statuses(db) == {"first": "completed", "second": "completed"}
    manager.close()


def test_a_take_over_through_a_symlink_is_the_same_file(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    link = tmp_path / "link.db"
    link.symlink_to(db)
    first = dagger_nb.TaskManager(db, registry=echo_registry())
    first.add_task("job", "t", "echo", task_id="t")
    with pytest.warns(DaggerWarning, match="took over"):
        second = dagger_nb.TaskManager(link, registry=echo_registry())
    assert [task.task_id for task in second.tasks()] == ["t"]
    second.close()


@pytest.mark.anyio
async def test_a_take_over_cancels_the_earlier_managers_running_job(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    started, cancelled, release = anyio.Event(), anyio.Event(), anyio.Event()
    attempts: list[str] = []

    async def slow(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        attempts.append(ctx.task_id)
        started.set()
        try:
            await release.wait()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return {"done": True}

    registry = echo_registry()
    registry.register("slow", slow)
    first = dagger_nb.TaskManager(db, registry=registry)
    first.add_task("job", "blocking", "slow", task_id="blocking")
    first.add_task("job", "after", "echo", {"x": 1}, task_id="after", dependencies=["blocking"])
    handle = first.start("job")  # background work on this loop, as a notebook cell does
    with anyio.fail_after(30):
        await started.wait()

    with pytest.warns(DaggerWarning, match=TAKE_OVER.format(owner="TaskManager", name=r"jobs\.db")):
        second = dagger_nb.TaskManager(db, registry=registry)  # the re-run cell, in sync code on the loop
    with anyio.fail_after(30):
        await cancelled.wait()  # the earlier job was cancelled, not left running
        while not handle.done:
            await anyio.sleep(0.01)
    release.set()  # an earlier attempt still running would now complete and write
    for _ in range(20):
        await anyio.lowlevel.checkpoint()
    # the attempt in flight when the file changed hands runs again in the new manager
    blocking = second.get_task("blocking")
    assert blocking is not None and blocking.status is dagger_nb.TaskStatus.PENDING
    assert stored_statuses(db) == {"blocking": "pending", "after": "pending"}

    report = await second.run("job")
    assert report.status is dagger_nb.JobStatus.COMPLETED
    assert attempts == ["blocking", "blocking"]
    assert stored_statuses(db) == {"blocking": "completed", "after": "completed"}
    await second.aclose()
    assert stored_statuses(db) == {"blocking": "completed", "after": "completed"}


def dag_registry(gate: anyio.Event, started: anyio.Event, ran: list[str]) -> dagger_nb.ActionRegistry:
    registry = dagger_nb.ActionRegistry()

    async def wait_for_gate() -> str:
        ran.append("slow")
        started.set()
        await gate.wait()
        return "slow done"

    registry.register("slow", wait_for_gate)
    registry.register("quick", lambda: ran.append("quick") or "quick done")
    return registry


DAG = {"name": "nightly", "nodes": [{"id": "slow", "action": "slow"}, {"id": "quick", "action": "quick"}]}


def test_rerunning_a_dag_executor_cell_takes_the_file_over(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ran: list[str] = []
    gate = anyio.Event()
    executor = dagger_nb.DagExecutor(dag_registry(gate, anyio.Event(), ran), db=db)
    with pytest.warns(DaggerWarning, match=TAKE_OVER.format(owner="DagExecutor", name=r"runs\.db")):
        executor = dagger_nb.DagExecutor(dagger_nb.ActionRegistry(), db=db)
    executor.registry.register("quick", lambda: "quick done")
    executor.add_workflow(dagger_nb.WorkflowSpec.model_validate({**DAG, "nodes": DAG["nodes"][1:]}))
    assert executor.run_sync("nightly").status == "succeeded"
    assert list(executor.runs_frame()["status"]) == ["succeeded"]
    executor.close()


@pytest.mark.anyio
async def test_a_take_over_cancels_the_earlier_executors_running_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ran: list[str] = []
    gate, started = anyio.Event(), anyio.Event()
    first = dagger_nb.DagExecutor(dag_registry(gate, started, ran), db=db)
    first.add_workflow(dagger_nb.WorkflowSpec.model_validate(DAG))
    handle = first.start("nightly")
    with anyio.fail_after(30):
        await started.wait()
    with pytest.warns(DaggerWarning, match=TAKE_OVER.format(owner="DagExecutor", name=r"runs\.db")):
        second = dagger_nb.DagExecutor(dag_registry(anyio.Event(), anyio.Event(), []), db=db)
    with anyio.fail_after(30):
        report = await handle.wait()
    assert report.status == "cancelled", (report.error, report.notes)
    gate.set()
    for _ in range(20):
        await anyio.lowlevel.checkpoint()
    (row,) = second.runs_frame().itertuples()
    assert row.run_id == report.run_id and row.status != "running"  # nothing of the earlier run left live
    second.close()


def reader_registry(received: list[Any], gate: anyio.Event, blocked: anyio.Event, cancelled: anyio.Event) -> Any:
    """A pub/sub registry with agent ``reader`` on ``news``: it records each payload, and on
    ``"block"`` waits for ``gate`` (setting ``blocked``, and ``cancelled`` if cancelled there)."""
    registry = dagger_nb.PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("reader", subscribe=["news"], registry=registry)
    async def reader(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        received.append(message.payload)
        if message.payload == "block":
            blocked.set()
            try:
                await gate.wait()
            except anyio.get_cancelled_exc_class():
                cancelled.set()
                raise

    return registry


def test_rerunning_a_pubsub_cell_takes_the_file_over(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    received: list[Any] = []
    registry = reader_registry(received, anyio.Event(), anyio.Event(), anyio.Event())
    bus = dagger_nb.PubSub(db=db, registry=registry)
    bus.register("reader")
    bus.publish_sync("news", 1)
    with pytest.warns(DaggerWarning, match=TAKE_OVER.format(owner="PubSub", name=r"bus\.db")):
        bus = dagger_nb.PubSub(db=db, registry=registry)
    assert bus.history_frame()["payload"].tolist() == [1]
    bus.register("reader")
    bus.run_sync(until_idle=True, timeout=30)  # the message the first bus had not delivered
    bus.publish_sync("news", 2)
    bus.run_sync(until_idle=True, timeout=30)
    assert bus.is_idle() and received == [1, 2]
    bus.close()


@pytest.mark.anyio
async def test_a_take_over_stops_the_earlier_bus_delivering(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    received: list[Any] = []
    gate, blocked, cancelled = anyio.Event(), anyio.Event(), anyio.Event()
    registry = reader_registry(received, gate, blocked, cancelled)
    first = dagger_nb.PubSub(db=db, registry=registry)
    first.register("reader")
    handle = first.start()  # delivering in the background on this loop, as in a notebook
    await first.publish("news", 1)
    await first.publish("news", "block")
    with anyio.fail_after(30):
        await blocked.wait()
    await first.publish("news", 3)  # acknowledged, queued behind the blocked handler

    with pytest.warns(DaggerWarning, match=TAKE_OVER.format(owner="PubSub", name=r"bus\.db")):
        second = dagger_nb.PubSub(db=db, registry=registry)  # the re-run cell
    with anyio.fail_after(30):
        await cancelled.wait()  # the earlier handler was cancelled, not left running
        while not handle.done:
            await anyio.sleep(0.01)
    assert first.closed
    with pytest.raises(dagger_nb.ExecutionError, match="closed"):
        await first.publish("news", "late")
    gate.set()

    assert second.history_frame()["payload"].tolist() == [1, "block", 3]
    second.register("reader")
    with anyio.fail_after(30):
        await second.run(until_idle=True)
    # the message in flight at the take-over is delivered again, nothing else is
    assert received == [1, "block", "block", 3]
    second.close()


@pytest.mark.anyio
async def test_a_take_over_while_a_sync_handler_runs_ends_the_earlier_bus_cleanly(tmp_path: Path) -> None:
    """A sync handler runs in a thread that cannot be cancelled: when it returns after the take-over,
    the earlier bus writes nothing more to the file it no longer owns and its run ends without an
    error; the newer bus delivers the message that was in flight again."""
    db = tmp_path / "bus.db"
    received: list[Any] = []
    started, release = threading.Event(), threading.Event()
    registry = dagger_nb.PubSubAgentRegistry()

    @dagger_nb.pubsub_agent("reader", subscribe=["news"], registry=registry)
    def reader(message: dagger_nb.Message, ctx: dagger_nb.PubSubContext) -> None:
        received.append(message.payload)
        if message.payload == "block":
            started.set()
            release.wait(30)

    first = dagger_nb.PubSub(db=db, registry=registry, stop_timeout=30)
    first.register("reader")
    handle = first.start()
    await first.publish("news", 1)
    await first.publish("news", "block")
    with anyio.fail_after(30):
        await anyio.to_thread.run_sync(started.wait, 30)
    with pytest.warns(DaggerWarning, match=TAKE_OVER.format(owner="PubSub", name=r"bus\.db")):
        second = dagger_nb.PubSub(db=db, registry=registry)  # the re-run cell
    release.set()  # the handler returns after its bus was taken over
    with anyio.fail_after(30):
        await handle  # ends cleanly: no StorageError for the file the bus no longer holds
    assert first.closed

    second.register("reader")
    with anyio.fail_after(30):
        await second.run(until_idle=True)
    assert received == [1, "block", "block"]  # the message in flight at the take-over, again
    assert second.history_frame()["delivered_to"].map(len).tolist() == [1, 1]
    second.close()


@pytest.mark.anyio
@pytest.mark.parametrize("round", range(12))
async def test_a_take_over_mid_publish_loses_nothing_acknowledged(tmp_path: Path, round: int) -> None:
    """Publishers keep publishing (group commits under way in worker threads) while the cell is
    re-run: every publish that returned is in the file, and the others fail cleanly."""
    db = tmp_path / "bus.db"
    after = 40 + 97 * round  # take over at a different point of the stream each round
    first = dagger_nb.PubSub(db=db)
    acknowledged: list[str] = []
    refused: list[BaseException] = []
    enough = anyio.Event()

    async def publisher(number: int) -> None:
        for index in range(1_000_000):
            try:
                await first.publish("news", f"{number}-{index}")
            except (dagger_nb.ExecutionError, dagger_nb.StorageError) as error:
                refused.append(error)
                return
            acknowledged.append(f"{number}-{index}")
            if len(acknowledged) >= after:
                enough.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for number in range(4):
                group.start_soon(publisher, number)
            await enough.wait()
            with pytest.warns(DaggerWarning, match="took over") as warned:
                second = dagger_nb.PubSub(db=db)
    assert [str(warning.message) for warning in warned if "failed" in str(warning.message)] == []
    stored = set(second.history_frame()["payload"].tolist())
    assert [message for message in acknowledged if message not in stored] == []
    assert len(refused) == 4  # every publisher was told, none hangs or sees a raw error
    second.close()


class _GatedConnection:
    """The log's connection, holding a write begun on a worker thread open until ``resume``."""

    def __init__(self, connection: sqlite3.Connection, in_write: threading.Event, resume: threading.Event) -> None:
        self._connection, self._in_write, self._resume = connection, in_write, resume

    def execute(self, sql: str, *args: Any) -> Any:
        result = self._connection.execute(sql, *args)
        if sql == "BEGIN" and threading.current_thread() is not threading.main_thread():
            self._in_write.set()
            self._resume.wait(60)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


@pytest.mark.anyio
async def test_a_take_over_waits_for_the_write_under_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-run cell closes the earlier bus while its group commit is mid-transaction in a
    worker thread: the close waits for that write instead of colliding with it."""
    db = tmp_path / "bus.db"
    first = dagger_nb.PubSub(db=db)
    await first.publish("news", "before")
    log = first._durable.log  # type: ignore[union-attr]
    in_write, resume = threading.Event(), threading.Event()
    log._connection = _GatedConnection(log._connection, in_write, resume)
    close = type(log).close

    def close_then_let_the_write_finish(self: Any) -> None:
        resume.set()  # from here on the worker may finish; a close not waiting for it has collided already
        close(self)

    outcome: list[Any] = []

    async def publish() -> None:
        try:
            outcome.append(await first.publish("news", "in flight"))
        except dagger_nb.StorageError as error:
            outcome.append(error)

    async with anyio.create_task_group() as group:
        group.start_soon(publish)
        await anyio.to_thread.run_sync(in_write.wait, 60)
        monkeypatch.setattr(type(log), "close", close_then_let_the_write_finish)
        with pytest.warns(DaggerWarning, match="took over") as warned:
            second = dagger_nb.PubSub(db=db)
    assert [str(warning.message) for warning in warned if "failed" in str(warning.message)] == []
    assert isinstance(outcome[0], dagger_nb.Message)  # its commit finished, so it was acknowledged ...
    assert second.history_frame()["payload"].tolist() == ["before", "in flight"]  # ... and it is in the file
    second.close()


# -- another process, through links ---------------------------------------------------------

HOLDERS = {
    "TaskManager": "import dagger_nb; store = dagger_nb.TaskManager(sys.argv[1])",
    "PubSub": "import dagger_nb; store = dagger_nb.PubSub(db=sys.argv[1])",
    "DagExecutor": "import dagger_nb; store = dagger_nb.DagExecutor(db=sys.argv[1])",
}
OPENERS: dict[str, Callable[[Path], Any]] = {
    "TaskManager": lambda path: dagger_nb.TaskManager(path),
    "PubSub": lambda path: dagger_nb.PubSub(db=path),
    "DagExecutor": lambda path: dagger_nb.DagExecutor(db=path),
}


@pytest.fixture
def held_by_another_process(tmp_path: Path) -> Iterator[Callable[[str, Path], int]]:
    """Start a process that opens a store on a file and keeps it open; returns its PID."""
    processes: list[subprocess.Popen[str]] = []

    def hold(kind: str, path: Path) -> int:
        program = f"import sys\n{HOLDERS[kind]}\nprint('ready', flush=True)\nsys.stdin.read()\n"
        process = subprocess.Popen(
            [sys.executable, "-c", program, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the store is open
        assert line.strip() == "ready", f"{kind} holder did not start: {line!r}"
        return process.pid

    yield hold
    for process in processes:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        process.wait(timeout=60)
        process.stdout.close()


def _link(kind: str, target: Path, folder: Path) -> Path:
    folder.mkdir()
    link = folder / "same.db"
    if kind == "symlink":
        link.symlink_to(target)
    else:
        os.link(target, link)
    return link


@pytest.mark.parametrize("store", list(HOLDERS))
@pytest.mark.parametrize("link_kind", ["symlink", "hard link"])
def test_a_link_to_a_file_another_process_holds_is_refused(
    tmp_path: Path, held_by_another_process: Callable[[str, Path], int], store: str, link_kind: str
) -> None:
    db = tmp_path / "store.db"
    pid = held_by_another_process(store, db)
    link = _link(link_kind, db, tmp_path / "elsewhere")
    with pytest.raises(DatabaseInUse, match=rf"in use by another live process \(PID {pid}\)") as caught:
        OPENERS[store](link)
    assert caught.value.pid == pid and str(link) in str(caught.value)


@pytest.mark.parametrize("store", list(HOLDERS))
def test_the_file_another_process_holds_is_refused_by_its_own_path(
    tmp_path: Path, held_by_another_process: Callable[[str, Path], int], store: str
) -> None:
    db = tmp_path / "store.db"
    pid = held_by_another_process(store, db)
    with pytest.raises(DatabaseInUse, match=rf"'{db}' is in use by another live process \(PID {pid}\)"):
        OPENERS[store](db)


def test_a_sigkilled_holders_file_opens_at_once(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    program = textwrap.dedent(
        """
        import os, signal, sys
        import dagger_nb
        registry = dagger_nb.TaskAgentRegistry()
        registry.register("echo", lambda input, ctx: input)
        manager = dagger_nb.TaskManager(sys.argv[1], registry=registry)
        manager.add_task("job", "t", "echo", task_id="t")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", program, str(db)], cwd=ROOT, timeout=60)
    assert result.returncode == -9
    with dagger_nb.TaskManager(db, registry=echo_registry()) as manager:
        assert manager.run_sync("job").status is dagger_nb.JobStatus.COMPLETED


def test_a_full_disk_still_locks_and_names_the_holder(
    small_tmpfs: Path, fill_disk: Callable[[Path], int], held_by_another_process: Callable[[str, Path], int]
) -> None:
    """On a full disk the PID note beside the file cannot be written: the lock still holds, and
    the kernel's lock table still names the holder."""
    db = small_tmpfs / "jobs.db"
    db.touch()
    fill_disk(small_tmpfs)
    HOLDERS["lock"] = "from dagger_nb.storage import ProcessLock; lock = ProcessLock(sys.argv[1], owner='Test')"
    try:
        pid = held_by_another_process("lock", db)
    finally:
        del HOLDERS["lock"]
    link = small_tmpfs / "link.db"
    link.symlink_to(db)
    with pytest.raises(DatabaseInUse, match=rf"\(PID {pid}\)"):
        ProcessLock(link, owner="TaskManager")
