"""Crash matrix of pub/sub with ``db=``: SIGKILL a publisher and two subscribers at random points.

A child process opens ``PubSub(db)`` with two subscribers of channel
``work`` (``async_reader``, an async handler, and ``sync_reader``, a sync one
in a worker thread), starts delivery and publishes the integers up to
``items`` that the file does not hold yet. Each handler appends
``<agent> <n>`` to an execution log (one ``write`` with ``O_APPEND``, which a
SIGKILL cannot tear); after each ``await publish(n)`` returns the child
appends ``ack <n>`` to the same log. The parent kills the child ``kills``
times at random moments once it is making progress, then lets a last child
publish the rest and deliver until idle, and compares the log and the file:

- ``lost``: acknowledged messages missing from the file, plus stored messages
  a subscriber never handled;
- ``redone``: handler executions beyond one per (subscriber, message);
- ``in_flight_allowance``: what may be redone: one message per subscriber per
  kill (the one whose handler was running, or whose progress was not yet
  committed, when the child died);
- ``stuck``: 1 when the last child did not finish in time.

Also used by ``bench/crash_matrix.py`` (25 kills, thousands of messages).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIBERS = ("async_reader", "sync_reader")
CHILD_TIMEOUT_SECONDS = 300

CHILD = """
import os, sqlite3, sys
import anyio
import dagger_nb

db, log, items = sys.argv[1], sys.argv[2], int(sys.argv[3])
log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
registry = dagger_nb.PubSubAgentRegistry()

def note(line):
    os.write(log_fd, (line + "\\n").encode())

@dagger_nb.pubsub_agent("async_reader", subscribe=["work"], registry=registry)
async def async_reader(message, ctx):
    note(f"async_reader {message.payload}")
    await anyio.sleep(0)

@dagger_nb.pubsub_agent("sync_reader", subscribe=["work"], registry=registry)
def sync_reader(message, ctx):
    note(f"sync_reader {message.payload}")

async def main():
    bus = dagger_nb.PubSub(db=db, registry=registry, queue_size=500)
    with sqlite3.connect(db) as connection:
        (start,) = connection.execute(
            "SELECT coalesce(max(CAST(payload AS INTEGER)) + 1, 0) FROM pubsub_messages"
        ).fetchone()
    connection.close()
    bus.register("async_reader")
    bus.register("sync_reader")
    async with bus:
        for n in range(start, items):
            await bus.publish("work", n)
            note(f"ack {n}")
    print("DONE", flush=True)

anyio.run(main)
"""


def _spawn(db: Path, log: Path, items: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(log), str(items)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _kill_when_busy(child: subprocess.Popen[str], log: Path, rng: random.Random) -> bool:
    """SIGKILL ``child`` a random moment after its log starts growing; False if it finished first."""
    size = _log_size(log)
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    while _log_size(log) <= size and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # polling with a deadline: the child is another process
    time.sleep(rng.uniform(0.0, 0.25))  # the random point of the kill, not a synchronisation
    if child.poll() is not None:
        child.communicate()
        return False
    child.send_signal(signal.SIGKILL)
    child.communicate()
    return True


def crash_matrix(*, kills: int, items: int, workdir: Path, seed: int) -> dict[str, int]:
    """Publish ``items`` messages to two subscribers, SIGKILLing the child ``kills`` times; return the counts."""
    rng = random.Random(seed)
    db, log = workdir / "bus.db", workdir / "executions.log"
    done_kills = 0
    for _ in range(kills):
        if _kill_when_busy(_spawn(db, log, items), log, rng):
            done_kills += 1
        else:
            break
    last = _spawn(db, log, items)
    try:
        out, err = last.communicate(timeout=CHILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        last.kill()
        out, err = last.communicate()
    stuck = int(last.returncode != 0 or "DONE" not in out)
    if stuck:
        sys.stderr.write(f"pub/sub crash matrix: the last child did not finish:\n{err}\n")

    lines = log.read_text().split()
    pairs = list(zip(lines[0::2], lines[1::2], strict=True))
    acked = {int(n) for who, n in pairs if who == "ack"}
    runs = Counter((who, int(n)) for who, n in pairs if who != "ack")
    with sqlite3.connect(db) as connection:
        stored = {int(payload) for (payload,) in connection.execute("SELECT payload FROM pubsub_messages")}
    connection.close()
    lost = len(acked - stored) + sum(1 for n in stored for who in SUBSCRIBERS if runs[(who, n)] == 0)
    return {
        "kills": done_kills,
        "items": items,
        "lost": lost,
        "redone": sum(count - 1 for count in runs.values() if count > 1),
        "in_flight_allowance": done_kills * len(SUBSCRIBERS),
        "stuck": stuck,
    }
