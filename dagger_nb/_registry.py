"""Lookup by name, shared by the action, task-agent and pub/sub agent registries."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from dagger_nb.errors import AgentNotFound

A = TypeVar("A")


class NameLookup(Generic[A]):
    """Entries by name; a missing name raises :attr:`missing` listing the known ones."""

    #: The error for an unknown name, made with the name and the registered names.
    missing: ClassVar[type[KeyError]] = AgentNotFound

    def __init__(self) -> None:
        self._entries: dict[str, A] = {}

    def get(self, name: str) -> A:
        """The entry called ``name``; :attr:`missing` lists the registered ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.missing(name, self._entries) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def _forget(self, name: str) -> None:
        if name not in self._entries:
            raise self.missing(name, self._entries)
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.names()}>"
