"""A thread-safe, namespaced value cache that shows itself as a pandas DataFrame.

Each node's outputs live in the namespace named after the node. A run's inputs
belong to the run: its :class:`RunCache` shows them as namespace ``inputs``
(read-only) over the cache the run writes its outputs to, so two runs sharing
one cache never see each other's inputs. Values are stored as given: a
DataFrame output stays a DataFrame.

>>> cache = Cache()
>>> cache.insert("load", "rows", 3)
>>> cache.get("load", "rows"), cache["load"]
(3, {'rows': 3})
>>> cache.to_frame()[["namespace", "key", "value", "type"]].values.tolist()
[['load', 'rows', 3, 'int']]
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dagger_nb.errors import CacheFormatError, CacheKeyError, FetchFailed, ReadOnlyInputs

if TYPE_CHECKING:
    import pandas as pd

_MISSING: Any = object()
#: the namespace a run's inputs show as (``inputs.KEY`` references read it)
INPUTS = "inputs"


class CacheConfig(BaseModel):
    """Optional limits on a :class:`Cache`; ``None`` means unlimited.

    Entries are evicted least-recently-used first, but never one whose
    namespace is retained (a pending node still needs it).
    """

    # Built on first validation: a cache without limits never pays for the validator.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    max_entries: int | None = Field(default=None, ge=1)
    max_memory_mb: float | None = Field(default=None, gt=0)
    eviction: Literal["lru"] = "lru"


_UNLIMITED = CacheConfig.model_construct()  # the defaults, which need no validation


@dataclass(slots=True)
class _Entry:
    value: Any
    updated_at: float
    size: int


def _size_of(value: Any) -> int:
    pd = sys.modules.get("pandas")  # a value cannot be a DataFrame before pandas is imported
    if pd is None:
        return sys.getsizeof(value)
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    if isinstance(value, pd.Series):
        return int(value.memory_usage(deep=True))
    return sys.getsizeof(value)


class Deferred:
    """A value kept elsewhere until somebody reads it (a result left on a Dask cluster).

    A :class:`Cache` stores it as it is; reading it (:meth:`Cache.get`, ``namespace``,
    ``items``, ``to_frame``...) calls :meth:`fetch` and keeps the value in its place, so
    it is fetched once. :meth:`Cache.peek` hands it on unfetched.
    """

    __slots__ = ()

    def fetch(self) -> Any:
        """The value: fetched on the first call, then kept (safe from several threads)."""
        raise NotImplementedError


class Cache:
    """Values keyed by ``(namespace, key)``; safe to use from several threads."""

    def __init__(self, config: CacheConfig | None = None) -> None:
        self.config = config or _UNLIMITED
        self._lock = threading.RLock()
        # A plain dict keeps insertion order, and moving an entry to the end (a read, when limits
        # ask for least-recently-used order) is a pop and a re-insert: an OrderedDict would add a
        # linked-list node to every value.
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._retained: dict[str, int] = {}
        self._bytes = 0
        self._sized = self.config.max_memory_mb is not None
        self._limited = self._sized or self.config.max_entries is not None

    def insert(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` under ``(namespace, key)``, replacing any previous value."""
        size = _size_of(value) if self._sized else 0
        entry = _Entry(value, time.time(), size)
        slot = (namespace, key)
        with self._lock:
            previous = self._entries.get(slot)
            if previous is not None:
                self._bytes -= previous.size
                del self._entries[slot]  # written again below: the newest entry goes last
            self._entries[slot] = entry
            self._bytes += size
            if self._limited:
                self._evict()

    def get(self, namespace: str, key: str, default: Any = _MISSING) -> Any:
        """The value at ``(namespace, key)``; ``default`` or :class:`CacheKeyError` if absent."""
        if self._limited:
            with self._lock:  # a read moves the entry to the end: least recently used goes first
                entry = self._entries.get((namespace, key))
                if entry is not None:
                    self._entries[namespace, key] = self._entries.pop((namespace, key))
        else:  # no lock for the read every node input makes (a miss is read again under it)
            entry = self._entries.get((namespace, key))
            if entry is None:  # an insert replacing the entry may be half done (free-threaded Python)
                with self._lock:
                    entry = self._entries.get((namespace, key))
        if entry is None:
            if default is _MISSING:
                raise self._missing(namespace, key)
            return default
        value = entry.value
        if isinstance(value, Deferred):
            return self._fetched(namespace, key, value)
        return value

    def peek(self, namespace: str, key: str, default: Any = _MISSING) -> Any:
        """Like :meth:`get`, but a :class:`Deferred` value comes as it is, not fetched (for a
        backend that hands it on where it is)."""
        with self._lock:
            entry = self._entries.get((namespace, key))
        if entry is None:
            return self.get(namespace, key, default)
        return entry.value

    def _fetched(self, namespace: str, key: str, deferred: Deferred) -> Any:
        """``deferred``'s value, which then takes its place (fetched outside the lock: a fetch may
        take a while, and other threads keep reading meanwhile)."""
        try:
            value = deferred.fetch()
        except Exception as error:
            raise FetchFailed(namespace, key, error) from error
        with self._lock:
            entry = self._entries.get((namespace, key))
            if entry is not None and entry.value is deferred:
                entry.value = value
        return value

    def _resolved(self, rows: list[tuple[str, str, Any, float]]) -> list[tuple[str, str, Any, float]]:
        """``rows`` with every :class:`Deferred` value fetched."""
        return [(ns, key, self._fetched(ns, key, value) if isinstance(value, Deferred) else value, at)
                for ns, key, value, at in rows]

    def __getitem__(self, namespace: str) -> dict[str, Any]:
        """A copy of ``namespace``, so ``cache[task_id]["output"]`` reads a task's output;
        :class:`CacheKeyError` if the namespace holds nothing."""
        values = self.namespace(namespace)
        if not values:
            raise self._missing(namespace)
        return values

    def contains(self, namespace: str, key: str) -> bool:
        """True when ``(namespace, key)`` holds a value."""
        with self._lock:
            return (namespace, key) in self._entries

    def namespace(self, namespace: str) -> dict[str, Any]:
        """A copy of every key and value in ``namespace``."""
        with self._lock:
            rows = [(ns, key, entry.value, 0.0) for (ns, key), entry in self._entries.items() if ns == namespace]
        return {key: value for _, key, value, _ in self._resolved(rows)}

    def namespaces(self) -> list[str]:
        """Every namespace holding at least one value, in first-insert order."""
        with self._lock:
            return list(dict.fromkeys(ns for ns, _ in self._entries))

    def clear(self, namespace: str | None = None) -> None:
        """Remove everything, or only ``namespace``."""
        with self._lock:
            if namespace is None:
                self._entries.clear()
                self._bytes = 0
                return
            for item in [item for item in self._entries if item[0] == namespace]:
                self._bytes -= self._entries.pop(item).size

    def retain(self, namespace: str) -> None:
        """Protect ``namespace`` from eviction until a matching :meth:`release`."""
        with self._lock:
            self._retained[namespace] = self._retained.get(namespace, 0) + 1

    def release(self, namespace: str) -> None:
        """Undo one :meth:`retain`; evicts at once if the cache is over its limits."""
        with self._lock:
            count = self._retained.get(namespace, 0) - 1
            if count > 0:
                self._retained[namespace] = count
            else:
                self._retained.pop(namespace, None)
            if self._limited:
                self._evict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def len(self) -> int:
        """Number of stored values (same as ``len(cache)``)."""
        return len(self)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        with self._lock:
            return iter(list(self._entries))

    def items(self) -> list[tuple[str, str, Any]]:
        """Every ``(namespace, key, value)``, oldest first."""
        return [(ns, key, value) for ns, key, value, _ in self._rows()]

    def to_frame(self) -> pd.DataFrame:
        """One row per value: ``namespace, key, value, type, updated_at`` (UTC)."""
        rows = [(ns, key, value, type(value).__name__, updated_at) for ns, key, value, updated_at in self._rows()]
        import pandas as pd

        frame = pd.DataFrame(rows, columns=["namespace", "key", "value", "type", "updated_at"])
        frame["updated_at"] = pd.to_datetime(frame["updated_at"], unit="s", utc=True)
        return frame

    def to_json(self) -> str:
        """The cache as JSON in the Rust layout ``{"ns": {"key": {"value": ...}}}``.

        Raises :class:`CacheFormatError` naming the first value that is not JSON-able.
        """
        layout: dict[str, dict[str, dict[str, Any]]] = {}
        for ns, key, value in self.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as error:
                raise CacheFormatError(
                    f"cache value '{ns}.{key}' of type {type(value).__name__} is not JSON-serialisable: {error}"
                ) from None
            layout.setdefault(ns, {})[key] = {"value": value}
        return json.dumps(layout)

    @classmethod
    def from_json(cls, text: str, config: CacheConfig | None = None) -> Cache:
        """Rebuild a cache from :meth:`to_json` output (or the Rust file layout)."""
        try:
            layout = json.loads(text)
        except json.JSONDecodeError as error:
            raise CacheFormatError(f"cache JSON is invalid: {error}") from None
        if not isinstance(layout, dict):
            raise CacheFormatError("cache JSON must be an object of namespaces")
        cache = cls(config)
        for ns, entries in layout.items():
            if not isinstance(entries, dict):
                raise CacheFormatError(f"cache JSON namespace '{ns}' must be an object of keys")
            for key, entry in entries.items():
                if not isinstance(entry, dict) or "value" not in entry:
                    raise CacheFormatError(f"cache JSON entry '{ns}.{key}' must be an object with a 'value'")
                cache.insert(ns, key, entry["value"])
        return cache

    def __repr__(self) -> str:
        return f"<Cache {len(self)} values in {len(self.namespaces())} namespaces>"

    def _rows(self) -> list[tuple[str, str, Any, float]]:
        """Every ``(namespace, key, value, updated_at)``, oldest first, :class:`Deferred` values fetched."""
        return self._resolved(self._raw_rows())

    def _raw_rows(self) -> list[tuple[str, str, Any, float]]:
        """:meth:`_rows` with :class:`Deferred` values as they are."""
        with self._lock:
            return [(ns, key, entry.value, entry.updated_at) for (ns, key), entry in self._entries.items()]

    def _missing(self, namespace: str, key: str | None = None) -> CacheKeyError:
        """The error for a miss, naming what the namespace (or else the cache) holds."""
        with self._lock:
            keys = [k for ns, k in self._entries if ns == namespace]
            namespaces = [] if keys else list(dict.fromkeys(ns for ns, _ in self._entries))
        return CacheKeyError(namespace, key, held_keys=keys, held_namespaces=namespaces)

    def _evict(self) -> None:
        max_entries = self.config.max_entries
        max_bytes = None if self.config.max_memory_mb is None else self.config.max_memory_mb * 1024 * 1024
        excess_entries = 0 if max_entries is None else len(self._entries) - max_entries
        excess_bytes = 0.0 if max_bytes is None else self._bytes - max_bytes
        if excess_entries <= 0 and excess_bytes <= 0:
            return
        newest = next(reversed(self._entries))  # never the one just written or read
        victims = []
        for item, entry in self._entries.items():
            if excess_entries <= 0 and excess_bytes <= 0:
                break
            if item == newest or item[0] in self._retained:
                continue
            victims.append(item)
            excess_entries -= 1
            excess_bytes -= entry.size
        for item in victims:
            self._bytes -= self._entries.pop(item).size


class RunCache(Cache):
    """One run's view of a cache: namespace ``inputs`` is the run's own inputs, read-only; every
    other namespace is ``shared``'s, where the run's nodes write their outputs.

    Runs sharing a cache (every ``%dagger_run`` of a notebook session shares one) each
    read their own inputs, however they interleave; ``shared`` itself holds outputs
    only, the latest written last.

    >>> shared = Cache()
    >>> first, second = RunCache(shared, {"x": 1}), RunCache(shared, {"x": 2})
    >>> first.insert("double", "result", 2)
    >>> first.get("inputs", "x"), second.get("inputs", "x"), second.get("double", "result")
    (1, 2, 2)
    >>> shared.namespaces()
    ['double']
    """

    def __init__(self, shared: Cache, inputs: Mapping[str, Any]) -> None:
        # Nothing of its own but the inputs: every other call goes to ``shared`` (no super().__init__).
        #: the cache the run's outputs go to
        self.shared: Cache = shared.shared if isinstance(shared, RunCache) else shared
        #: the run's inputs, read-only
        self.inputs: Mapping[str, Any] = MappingProxyType(dict(inputs))
        self.config = self.shared.config
        self._inputs_at = time.time()
        # What this run's actions wrote themselves: runs sharing a cache write the same namespaces,
        # so a value that changed during an attempt is not proof that this run's action wrote it.
        self._written: set[tuple[str, str]] = set()

    def insert(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` in the shared cache; a run's inputs cannot be written."""
        if namespace == INPUTS:
            raise ReadOnlyInputs(INPUTS, key)
        self.shared.insert(namespace, key, value)
        self._written.add((namespace, key))

    def take_written(self, namespace: str) -> set[str]:
        """The keys of ``namespace`` written through this view since the last call for it, which
        then forgets them."""
        if not self._written:
            return set()
        keys = {key for written_namespace, key in self._written if written_namespace == namespace}
        self._written.difference_update((namespace, key) for key in keys)
        return keys

    def get(self, namespace: str, key: str, default: Any = _MISSING) -> Any:
        """The run's input ``key`` for namespace ``inputs``, else the shared cache's value."""
        if namespace != INPUTS:
            return self.shared.get(namespace, key, default)
        value = self.inputs.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise self._missing(namespace, key)
            return default
        return value

    def peek(self, namespace: str, key: str, default: Any = _MISSING) -> Any:
        """See :meth:`Cache.peek` (the run's inputs are never :class:`Deferred`)."""
        if namespace != INPUTS:
            return self.shared.peek(namespace, key, default)
        return self.get(namespace, key, default)

    def contains(self, namespace: str, key: str) -> bool:
        """True when ``(namespace, key)`` holds a value (for ``inputs``: the run has that input)."""
        return key in self.inputs if namespace == INPUTS else self.shared.contains(namespace, key)

    def namespace(self, namespace: str) -> dict[str, Any]:
        """A copy of every key and value in ``namespace``."""
        return dict(self.inputs) if namespace == INPUTS else self.shared.namespace(namespace)

    def namespaces(self) -> list[str]:
        """``inputs`` first when the run has any, then the shared cache's other namespaces."""
        others = [ns for ns in self.shared.namespaces() if ns != INPUTS]
        return [INPUTS, *others] if self.inputs else others

    def clear(self, namespace: str | None = None) -> None:
        """Remove the shared cache's values (all, or ``namespace``'s); the run's inputs stay."""
        if namespace != INPUTS:
            self.shared.clear(namespace)

    def retain(self, namespace: str) -> None:
        """See :meth:`Cache.retain` (the run's inputs are never evicted)."""
        if namespace != INPUTS:
            self.shared.retain(namespace)

    def release(self, namespace: str) -> None:
        """See :meth:`Cache.release`."""
        if namespace != INPUTS:
            self.shared.release(namespace)

    def __len__(self) -> int:
        return len(self._raw_rows())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(ns, key) for ns, key, _, _ in self._raw_rows()])

    def items(self) -> list[tuple[str, str, Any]]:
        """The run's inputs, then the shared cache's values but any it holds under ``inputs``."""
        return [(ns, key, value) for ns, key, value, _ in self._rows()]

    def __repr__(self) -> str:
        return f"<RunCache {len(self.inputs)} inputs over {self.shared!r}>"

    def _raw_rows(self) -> list[tuple[str, str, Any, float]]:
        mine = [(INPUTS, key, value, self._inputs_at) for key, value in self.inputs.items()]
        return mine + [row for row in self.shared._raw_rows() if row[0] != INPUTS]

    def _fetched(self, namespace: str, key: str, deferred: Deferred) -> Any:
        return self.shared._fetched(namespace, key, deferred)

    def _missing(self, namespace: str, key: str | None = None) -> CacheKeyError:
        if namespace != INPUTS:
            return self.shared._missing(namespace, key)
        namespaces = [] if self.inputs else self.namespaces()
        return CacheKeyError(namespace, key, held_keys=list(self.inputs), held_namespaces=namespaces)


def insert_value(cache: Cache, node_id: str, key: str, value: Any) -> None:
    """Store ``value`` as output ``key`` of node ``node_id`` (Rust Dagger's helper)."""
    cache.insert(node_id, key, value)


def get_value(cache: Cache, node_id: str, key: str) -> Any:
    """Output ``key`` of node ``node_id``; :class:`CacheKeyError` if it was not produced."""
    return cache.get(node_id, key)


def parse_input_from_name(cache: Cache, name: str, inputs: list[Any]) -> Any:
    """Resolve the node input called ``name`` from ``inputs`` (a node's ``InputSpec`` list).

    The input's reference (``inputs.KEY``, ``NODE.OUTPUT``, or a bare ``KEY``
    meaning ``inputs.KEY``) is read from the cache where :attr:`InputSpec.source`
    says, as the executor reads it; an input with a literal ``value`` returns it.
    """
    for spec in inputs:
        if spec.name != name:
            continue
        source = spec.source
        if source is None:
            return spec.value
        return cache.get(*source)
    raise CacheKeyError(INPUTS, name, held_keys=[spec.name for spec in inputs])
