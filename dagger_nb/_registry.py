"""The registry API shared by actions, task agents and pub/sub agents.

Each registry defines its own ``register(...)`` (what a definition is differs); the rest is one
contract: ``unregister(name)``, ``get(name)``, ``names()``, ``name in registry``, ``len(registry)``
and iteration over the names, sorted. Registering a name again replaces the old definition (a
notebook cell run twice defines it twice) and records a note: an INFO line on the ``dagger_nb``
logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import ClassVar, Generic, TypeVar

from dagger_nb.errors import AgentNotFound

A = TypeVar("A")

logger = logging.getLogger("dagger_nb")


class NameLookup(Generic[A]):
    """Entries by name; a missing name raises :attr:`missing` listing the registered ones."""

    #: The error for an unknown name, made with the name and the registered names.
    missing: ClassVar[type[KeyError]] = AgentNotFound
    #: What an entry is called in the note about a redefinition.
    kind: ClassVar[str] = "agent"

    def __init__(self) -> None:
        self._entries: dict[str, A] = {}

    def _store(self, name: str, entry: A) -> A:
        """Keep ``entry`` under ``name``, replacing (with a note) what was there."""
        if name in self._entries:
            logger.info("%s '%s' redefined; the new definition replaces the old one", self.kind, name)
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> A:
        """The entry called ``name``; :attr:`missing` lists the registered ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.missing(name, self._entries) from None

    def unregister(self, name: str) -> None:
        """Forget ``name``; :attr:`missing` (listing the registered names) if it is not registered."""
        if name not in self._entries:
            raise self.missing(name, self._entries)
        del self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {', '.join(self.names()) or 'empty'}>"
