"""What one attempt of a task changes in its job: durable together when the attempt ends, or never.

A planner that spawns five children and is killed after the third must not
leave three of them in the database: when it runs again it would find part
of its plan, take it for the whole, and the job would end ``completed`` with
work never done. So the tasks an attempt adds, the dependencies it gives its
own task and the status it sets on itself are kept in an :class:`AttemptJournal`
while the agent runs. The tasks are in the manager's memory at once (the agent
can name them as dependencies of further children, ``get_task`` shows them),
but nothing schedules them and nothing writes them until the runner applies
the attempt's result: then the journal is committed into the graph and the
whole of it is written in the same transaction as the attempt's outcome. An
attempt that never ends (a cancelled job, a killed process) leaves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dagger_nb.errors import TaskError

if TYPE_CHECKING:
    from dagger_nb.agents.manager import TaskManager


@dataclass(slots=True)
class AttemptJournal:
    """The changes of one running attempt of ``task_id``, not yet part of the job's graph."""

    task_id: str
    #: tasks the attempt added, in creation order (in the manager's memory, unlinked, unwritten)
    added: list[str] = field(default_factory=list)
    #: new dependencies of the running task itself
    dependencies: list[str] = field(default_factory=list)
    #: the reason, when the agent set its own task ``BLOCKED`` through the manager
    blocked: str | None = None
    #: set once committed or discarded: an abandoned thread's later changes are refused
    closed: bool = False

    def check_open(self) -> None:
        """:class:`TaskError` if the attempt has ended (a timed-out sync agent's thread runs on)."""
        if self.closed:
            raise TaskError(
                f"task '{self.task_id}': this attempt has ended (timed out or cancelled); "
                "the tasks and dependencies it adds now are not kept"
            )

    def depends_on(self, task_id: str) -> bool:
        """True when the attempt already made its task depend on ``task_id``."""
        return task_id in self.dependencies

    def commit(self, manager: TaskManager) -> list[str]:
        """Link what the attempt made into the job and mark all of it for the next write;
        returns the ids of the tasks it added."""
        tasks = manager._tasks
        for task_id in self.added:
            task = tasks[task_id]
            manager._link(task)
            manager._touch(task)
        if self.dependencies:
            task = tasks[self.task_id]
            new = [dep for dep in self.dependencies if dep not in task.dependencies]
            task.dependencies = [*task.dependencies, *new]
            for dep in new:
                manager._dependents.setdefault(dep, []).append(self.task_id)
            manager._touch(task)
        added, self.added, self.dependencies = self.added, [], []
        self.closed = True
        return added

    def discard(self, manager: TaskManager) -> None:
        """Forget what the attempt made: the attempt will not end (its job was cancelled)."""
        for task_id in reversed(self.added):
            manager._forget(task_id)
        self.added, self.dependencies, self.blocked = [], [], None
        self.closed = True
