"""The record a succeeded run leaves in its executor: its outcomes, kept compactly.

Most nodes of a succeeded run ran once, printed and noted nothing, and have nothing
to tell but when they started and finished. An object per node, with its place in a
dict and its index into the run's clock, would hold ten times what those two times take
for as long as the executor remembers the run; :class:`CompactOutcomes` keeps such a
plain node as its two times, and every other outcome as it was.
"""

from __future__ import annotations

import copy
from array import array
from collections.abc import ItemsView, Iterator, Mapping, ValuesView

from dagger_nb.dag.report import NodeOutcome, clock_in_order
from dagger_nb.dag.spec import WorkflowSpec

__all__ = ["CompactOutcomes", "compact_outcomes"]


def compact_outcomes(spec: WorkflowSpec, outcomes: Mapping[str, NodeOutcome]) -> Mapping[str, NodeOutcome]:
    """``outcomes`` (of ``spec``'s nodes, in their order) as :class:`CompactOutcomes`; as they are
    when they do not follow ``spec``'s nodes one for one."""
    nodes = spec.nodes
    if len(nodes) != len(outcomes) or any(node.id != node_id for node, node_id in zip(nodes, outcomes, strict=True)):
        return outcomes
    return CompactOutcomes(spec, outcomes)


def is_plain(outcome: NodeOutcome) -> bool:
    """Whether ``outcome`` is a succeeded first attempt and all but its times is as a new outcome has it
    (a succeeded node has both times)."""
    return (
        outcome.status == "succeeded" and outcome.attempts == 1 and not outcome.retry_messages
        and not outcome.notes and not outcome.logs and outcome.error is None and outcome.worker is None
        and outcome.traceback is None and outcome.reason is None and outcome.cached_from is None
        and outcome.tokens == 0 and outcome.cost is None and not outcome.models
    )


class CompactOutcomes(Mapping[str, NodeOutcome]):
    """Node id -> :class:`NodeOutcome` of a succeeded run, read as :attr:`ExecutionReport.outcomes`
    is, in the workflow's order. A plain node's outcome is made when it is read (a new, equal
    object each time: the record of an ended run does not change)."""

    __slots__ = ("_actions", "_ids", "_index", "_kept", "_plain", "_times")

    def __init__(self, spec: WorkflowSpec, outcomes: Mapping[str, NodeOutcome]) -> None:
        # The nodes as they are now: a change to the spec afterwards does not change the record.
        self._ids = tuple(node.id for node in spec.nodes)
        self._actions = tuple(node.action for node in spec.nodes)
        self._index: dict[str, int] | None = None  # node id -> position, made on the first look-up
        self._plain = bytearray(len(self._ids))
        #: the outcomes that are not plain, as copies with times of their own (not the run's clock)
        self._kept: dict[str, NodeOutcome] = {}
        # Two times per node, in order (a kept node's are not read): a copy of the run's clock when
        # it holds them so, as it does for a run that did not grow (read without a property each).
        clock = clock_in_order(outcomes.values())
        self._times = array("d") if clock is None else array("d", clock)
        for position, (node_id, outcome) in enumerate(outcomes.items()):
            if is_plain(outcome) and (clock is not None or self._add_times(outcome)):
                self._plain[position] = 1
            else:
                self._kept[node_id] = copy.copy(outcome)
                if clock is None:
                    self._times.extend((0.0, 0.0))

    def _add_times(self, outcome: NodeOutcome) -> bool:
        started, finished = outcome.started_at, outcome.finished_at
        if started is None or finished is None:
            return False
        self._times.extend((started, finished))
        return True

    def _at(self, position: int) -> NodeOutcome:
        node_id = self._ids[position]
        if not self._plain[position]:
            return self._kept[node_id]
        started, finished = self._times[2 * position], self._times[2 * position + 1]
        return NodeOutcome(node_id, self._actions[position], status="succeeded", attempts=1,  # NaN: not known
                           started_at=None if started != started else started,
                           finished_at=None if finished != finished else finished)

    def _in_order(self) -> Iterator[NodeOutcome]:
        return (self._at(position) for position in range(len(self._plain)))

    def _position(self, node_id: object) -> int | None:
        if self._index is None:
            self._index = {node_id: position for position, node_id in enumerate(self._ids)}
        return self._index.get(node_id) if isinstance(node_id, str) else None

    def __getitem__(self, node_id: str) -> NodeOutcome:
        kept = self._kept.get(node_id)
        if kept is not None:
            return kept
        position = self._position(node_id)
        if position is None:
            raise KeyError(node_id)
        return self._at(position)

    def __contains__(self, node_id: object) -> bool:
        return self._position(node_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._ids)

    def __repr__(self) -> str:
        shown = ", ".join(f"{node_id!r}: {outcome!r}" for node_id, outcome in zip(self, self._head(), strict=False))
        more = f", ... ({len(self) - 3} more)" if len(self) > 3 else ""
        return f"CompactOutcomes({{{shown}{more}}})"

    def _head(self) -> Iterator[NodeOutcome]:
        return (self._at(position) for position in range(min(3, len(self._plain))))

    def __len__(self) -> int:
        return len(self._plain)

    def values(self) -> ValuesView[NodeOutcome]:
        """Every outcome, in the workflow's order (made in one pass, without a look-up each)."""
        return _Values(self)

    def items(self) -> ItemsView[str, NodeOutcome]:
        """``(node id, outcome)`` pairs, in the workflow's order."""
        return _Items(self)

    def counts(self) -> dict[str, int]:
        """Number of nodes in each status, without making the plain nodes' outcomes."""
        counts: dict[str, int] = {}
        plain = sum(self._plain)
        if plain:
            counts["succeeded"] = plain
        for outcome in self._kept.values():
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts


class _Values(ValuesView[NodeOutcome]):
    _mapping: CompactOutcomes

    def __iter__(self) -> Iterator[NodeOutcome]:
        return self._mapping._in_order()


class _Items(ItemsView[str, NodeOutcome]):
    _mapping: CompactOutcomes

    def __iter__(self) -> Iterator[tuple[str, NodeOutcome]]:
        return ((outcome.node, outcome) for outcome in self._mapping._in_order())
