"""Lookup by name, shared by the task-agent and pub/sub agent registries."""

from __future__ import annotations

from typing import Generic, TypeVar

from dagger_nb.errors import AgentNotFound

A = TypeVar("A")


class AgentLookup(Generic[A]):
    """Agents by name; a missing name raises :class:`AgentNotFound` listing the known ones."""

    def __init__(self) -> None:
        self._agents: dict[str, A] = {}

    def get(self, name: str) -> A:
        """The agent called ``name``; :class:`AgentNotFound` lists the registered ones."""
        try:
            return self._agents[name]
        except KeyError:
            raise AgentNotFound(name, self._agents) from None

    def names(self) -> list[str]:
        """Registered agent names, sorted."""
        return sorted(self._agents)

    def _forget(self, name: str) -> None:
        if name not in self._agents:
            raise AgentNotFound(name, self._agents)
        del self._agents[name]

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.names()}>"
