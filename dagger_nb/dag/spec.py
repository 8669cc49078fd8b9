"""The workflow format: pydantic models for the YAML files of Rust Dagger and dagger-nb.

A minimal node needs only ``id`` and ``action``; everything else has a default
(see the README's "Workflow format" table). Files written for the Rust Dagger
load unchanged, including the ``!Linear`` / ``!Exponential`` retry tags.

>>> spec = WorkflowSpec(name="demo", nodes=[NodeSpec(id="a", action="load"),
...     NodeSpec(id="b", action="clean", inputs=[InputSpec(name="x", reference="a.rows")])])
>>> spec.dependencies("b")
['a']
>>> spec.topological_order()
['a', 'b']
"""

from __future__ import annotations

import functools
import graphlib
import types
import typing
import weakref
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_serializer,
    model_validator,
)

from dagger_nb.errors import NodeNotFound

#: Upper bound of ``try_count`` and ``config.max_attempts``: more attempts than this is a typo.
MAX_ATTEMPTS = 1000


def _not_a_boolean(value: Any) -> Any:
    # YAML's `true` is a bool, and bool is an int to Python: `timeout: true` must not mean 1 s.
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def _no_items() -> list[Any]:
    # The default of list fields. Not ``list`` itself: pydantic reads a default factory's
    # signature, and a builtin's is parsed from text by the tokenizer, whose regular
    # expressions then take longer to compile than the whole first run of a small workflow.
    return []


class SharedEmptyList(list[Any]):
    """An empty list that every object given none shares (a workflow of 100,000 nodes needs no
    200,000 empty lists, each one more object for the collector to walk). Read-only: a change
    raises :class:`TypeError` saying what to do instead (``hint``); copies share it too."""

    hint = "this empty list is shared; assign a new list instead"

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError(self.hint)

    append = extend = insert = remove = pop = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only  # type: ignore[assignment]

    def __copy__(self) -> SharedEmptyList:
        return self

    def __deepcopy__(self, memo: object) -> SharedEmptyList:
        return self


class _NoItems(SharedEmptyList):
    hint = "this empty list is shared by every node given none; assign a new list instead (node.dependencies = [...])"

    def __reduce__(self) -> str:
        return "NO_ITEMS"


#: the empty ``dependencies``, ``inputs`` and ``outputs`` of nodes given none (see :class:`SharedEmptyList`)
NO_ITEMS: list[Any] = _NoItems()

Count = Annotated[int, BeforeValidator(_not_a_boolean)]
Finite = Annotated[float, BeforeValidator(_not_a_boolean), AllowInfNan(False)]


class _Spec(BaseModel):
    # Bytes (YAML `!!binary`) in a literal must not stop the run store from writing the spec as JSON.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, ser_json_bytes="base64")

    # Nodes and inputs share the set of the fields they were given (see _share_fields_set); an
    # instance takes its own copy before anything changes it, so no change reaches the others.
    def __setattr__(self, name: str, value: Any) -> None:
        _own_fields_set(self)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        _own_fields_set(self)
        super().__delattr__(name)


class _NullMeansDefault(_Spec):
    """A model some of whose keys Rust files set to null for "not set": such a key takes its default."""

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for item in value.values():  # `None in values()` would compare arrays and frames with ==
                if item is None:
                    defaulted = _defaulted_when_null(cls)
                    return {key: item for key, item in value.items() if not (item is None and key in defaulted)}
        return value


def _no_node_items() -> list[Any]:
    # A factory, not the default itself: a JSON schema cannot write the shared list as a default.
    return NO_ITEMS


# One set per combination of given fields, shared by every node or input given those fields: a set
# per instance is a fifth of a big workflow's memory, and one more object the collector walks.
# Bounded: ``extra="forbid"`` allows only the models' own field names.
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__


# The last two sets shared: a workflow's nodes, and their inputs, are mostly given the same fields.
_RECENT: list[set[str]] = [set(), set()]


def _share_fields_set(model: BaseModel) -> None:
    given = model.__pydantic_fields_set__
    for shared in _RECENT:
        if given == shared:
            _set_fields_set(model, shared)
            return
    key = frozenset(given)
    shared = _FIELDS_SETS.setdefault(key, set(key))  # one call: two threads never share two sets
    _RECENT[:] = [shared, _RECENT[0]]
    _set_fields_set(model, shared)


def _own_fields_set(model: BaseModel) -> None:
    given = model.__pydantic_fields_set__
    if _FIELDS_SETS.get(frozenset(given)) is given:
        _set_fields_set(model, set(given))


@functools.cache
def _defaulted_when_null(model: type[BaseModel]) -> frozenset[str]:
    """Fields of ``model`` that have a default but whose type does not accept None."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if not field.is_required() and not _accepts_none(field.annotation)
    )


def _accepts_none(annotation: Any) -> bool:
    if annotation is Any or annotation is None or annotation is type(None):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_accepts_none(arg) for arg in typing.get_args(annotation))
    return False


class OnFailure(StrEnum):
    """What a run does after a node fails for good."""

    CONTINUE = "continue"
    PAUSE = "pause"
    STOP = "stop"

    @classmethod
    def _missing_(cls, value: object) -> OnFailure | None:
        # Rust files spell these `Continue`, `Pause`, `Stop`.
        if isinstance(value, str):
            return cls.__members__.get(value.upper())
        return None


class HumanTimeoutAction(StrEnum):
    """What happens when a person does not answer in time."""

    AUTOPILOT = "autopilot"
    PAUSE = "pause"

    @classmethod
    def _missing_(cls, value: object) -> HumanTimeoutAction | None:
        if isinstance(value, str):
            return cls.__members__.get(value.upper())
        return None


class RetryStrategy(_NullMeansDefault):
    """Delay between attempts of a failing node.

    Accepts every Rust spelling: ``Immediate``, ``{Linear: {delay_secs: 1}}``,
    ``{Exponential: {initial_delay_secs: 2, max_delay_secs: 60, multiplier: 2.0}}``
    and the YAML tags ``!Linear {...}`` / ``!Exponential {...}``.

    >>> RetryStrategy.model_validate({"Linear": {"delay_secs": 1.5}}).delay(attempt=3)
    1.5
    >>> RetryStrategy.model_validate("Immediate").delay(attempt=2)
    0.0
    """

    kind: Literal["immediate", "linear", "exponential"] = "exponential"
    delay_secs: Finite = Field(default=1.0, ge=0, le=86400)
    initial_delay_secs: Finite = Field(default=2.0, ge=0, le=86400)
    max_delay_secs: Finite = Field(default=60.0, ge=0, le=86400)
    multiplier: Finite = Field(default=2.0, ge=1.0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _from_rust(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"kind": value.lower()}
        if isinstance(value, dict) and len(value) == 1:
            ((name, params),) = value.items()
            if isinstance(name, str) and name.lower() in ("immediate", "linear", "exponential"):
                params = {} if params is None else params
                if not isinstance(params, dict):
                    raise ValueError(f"{name} retry strategy takes a mapping of parameters")
                return {"kind": name.lower(), **params}
        return value

    @model_serializer
    def _to_rust(self) -> Any:
        if self.kind == "immediate":
            return "Immediate"
        if self.kind == "linear":
            return {"Linear": {"delay_secs": self.delay_secs}}
        return {
            "Exponential": {
                "initial_delay_secs": self.initial_delay_secs,
                "max_delay_secs": self.max_delay_secs,
                "multiplier": self.multiplier,
            }
        }

    def delay(self, *, attempt: int) -> float:
        """Finite to wait before ``attempt`` (2 for the first retry)."""
        if attempt <= 1 or self.kind == "immediate":
            return 0.0
        if self.kind == "linear":
            return self.delay_secs
        try:
            grown = self.initial_delay_secs * self.multiplier ** (attempt - 2)
        except OverflowError:
            return self.max_delay_secs
        return min(grown, self.max_delay_secs)


class DagConfig(_NullMeansDefault):
    """Run-wide settings; every field has a default, so ``config:`` is optional."""

    max_attempts: Count = Field(default=3, ge=1, le=MAX_ATTEMPTS)
    on_failure: OnFailure = OnFailure.PAUSE
    timeout_seconds: Finite | None = Field(default=3600, gt=0, le=86400)
    max_iterations: Count = Field(default=50, ge=1, le=1000)
    retry_strategy: RetryStrategy = Field(default_factory=RetryStrategy)
    enable_parallel_execution: bool = True
    max_parallel_nodes: Count = Field(default=8, ge=1, le=100_000)
    # None by default: a review point waits for a person (forever unless human_wait_minutes), so a
    # supervisor loop only stops for reviews when asked to.
    review_frequency: Count | None = Field(default=None, ge=1, le=1_000_000)
    human_wait_minutes: Finite | None = Field(default=None, gt=0, le=43200)
    human_timeout_action: HumanTimeoutAction = HumanTimeoutAction.AUTOPILOT
    max_tokens: Count | None = Field(default=None, ge=1, le=10**15)
    enable_incremental_cache: bool = False
    cache_snapshot_interval: Finite = Field(default=60, gt=0, le=86400)

    @property
    def parallelism(self) -> int:
        """How many nodes may run at once."""
        return self.max_parallel_nodes if self.enable_parallel_execution else 1


class InputSpec(_Spec):
    """A node input: a ``reference`` (``inputs.KEY`` or ``NODE.OUTPUT``) or a literal ``value``."""

    name: str = Field(min_length=1)
    reference: str | None = None
    value: Any = None
    description: str | None = None
    type: str | None = Field(default=None, description="informational, as in Rust files")

    # After validation, once: not an "after" validator, which pydantic runs again each time an
    # instance is passed to a node (a big fan-in has thousands of inputs).
    def model_post_init(self, context: Any, /) -> None:
        given = self.__pydantic_fields_set__
        if self.reference is not None and "value" in given:
            raise ValueError(f"input '{self.name}' has both 'reference' and 'value'; keep one")
        if self.reference is None and "value" not in given:
            raise ValueError(f"input '{self.name}' needs a 'reference' or a 'value'")
        _share_fields_set(self)

    @property
    def source(self) -> tuple[str, str] | None:
        """``(namespace, key)`` the reference reads from the cache; None for a literal.

        A bare ``KEY`` (older Rust files) means ``inputs.KEY``.
        """
        return None if self.reference is None else split_reference(self.reference)


class OutputSpec(_Spec):
    """A named output a node promises to produce."""

    name: str = Field(min_length=1)
    description: str | None = None
    type: str | None = Field(default=None, description="informational, as in Rust files")


class NodeSpec(_NullMeansDefault):
    """One step of a workflow: which action runs, on what, after what."""

    id: str = Field(min_length=1)
    action: str = Field(min_length=1)
    dependencies: list[str] = Field(default_factory=_no_node_items)
    inputs: list[InputSpec] = Field(default_factory=_no_node_items)
    outputs: list[OutputSpec] = Field(default_factory=_no_node_items)
    failure: str | None = None
    onfailure: bool = True
    description: str | None = None
    timeout: Finite | None = Field(default=None, gt=0, le=604800)
    try_count: Count | None = Field(default=None, ge=1, le=MAX_ATTEMPTS)
    instructions: str | list[str] | None = None

    def model_post_init(self, context: Any, /) -> None:  # see InputSpec.model_post_init
        _share_fields_set(self)

    @property
    def failure_handler(self) -> str | None:
        """The failure action's name, or None when empty."""
        return self.failure or None

    def attempts(self, config: DagConfig) -> int:
        """Total attempts: ``try_count`` (default ``config.max_attempts``), or 1 without ``onfailure``."""
        if not self.onfailure:
            return 1
        return self.try_count if self.try_count is not None else config.max_attempts


class WorkflowSpec(_NullMeansDefault):
    """A whole workflow: metadata, config and nodes."""

    name: str = Field(min_length=1)
    description: str | None = None
    author: str | None = None
    version: str | None = None
    signature: str | None = None
    tags: list[str] = Field(default_factory=_no_items)
    instructions: str | list[str] | None = None
    config: DagConfig = Field(default_factory=DagConfig)
    nodes: list[NodeSpec] = Field(default_factory=_no_items)

    @model_validator(mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 1.0` is a float in YAML; keep it as the text the author wrote.
        if isinstance(value, dict) and isinstance(value.get("version"), int | float):
            value = {**value, "version": str(value["version"])}
        return value

    def node(self, node_id: str) -> NodeSpec:
        """The node called ``node_id``; :class:`NodeNotFound` listing some known ids if absent.

        A dict look-up (the index is rebuilt when ``nodes`` changes), so asking for every
        node of a big workflow stays linear.
        """
        position = self.position(node_id)
        if position is None:
            raise NodeNotFound(self.name, node_id, [node.id for node in self.nodes])
        return self.nodes[position]

    def position(self, node_id: str) -> int | None:
        """Where the node called ``node_id`` is in :attr:`nodes`; None when there is none (a dict
        look-up, as in :meth:`node`)."""
        for fresh in (False, True):
            position = _node_index(self, rebuild=fresh).get(node_id)
            if position is not None and position < len(self.nodes) and self.nodes[position].id == node_id:
                return position
        return None

    def dependencies(self, node_id: str) -> list[str]:
        """Explicit dependencies plus nodes whose outputs ``node_id`` references, in order."""
        node = self.node(node_id)
        return node_dependencies(node)

    def dependency_map(self) -> dict[str, list[str]]:
        """Every node id mapped to :meth:`dependencies`."""
        return {node.id: node_dependencies(node) for node in self.nodes}

    def topological_order(self) -> list[str]:
        """Node ids so that every node comes after its dependencies (file order breaks ties)."""
        sorter = graphlib.TopologicalSorter(self.dependency_map())
        sorter.prepare()
        order: list[str] = []
        rank = {node.id: index for index, node in enumerate(self.nodes)}
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=lambda node_id: rank.get(node_id, len(rank)))
            order.extend(ready)
            sorter.done(*ready)
        return order

    def to_yaml(self) -> str:
        """The workflow as YAML text that :func:`dagger_nb.load_workflow` reads back equal."""
        import yaml

        data = self.model_dump(mode="json", exclude_defaults=True)
        # Literal input values keep their Python form (dates, infinities) and an explicit null.
        for node, node_data in zip(self.nodes, data.get("nodes", []), strict=True):
            for item, item_data in zip(node.inputs, node_data.get("inputs", []), strict=True):
                if item.reference is None:
                    item_data["value"] = item.value
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# Kept beside the models, not in them: a cache inside a pydantic model would take part in ``==``.
_NODE_INDEXES: dict[int, tuple[weakref.ref[WorkflowSpec], list[NodeSpec], int, dict[str, int]]] = {}


def _node_index(spec: WorkflowSpec, *, rebuild: bool) -> dict[str, int]:
    """``spec``'s node ids mapped to their first position in ``spec.nodes``."""
    key = id(spec)
    entry = _NODE_INDEXES.get(key)
    nodes = spec.nodes
    if not rebuild and entry is not None and entry[0]() is spec and entry[1] is nodes and entry[2] == len(nodes):
        return entry[3]
    index: dict[str, int] = {}
    for position, node in enumerate(nodes):
        index.setdefault(node.id, position)
    reference = weakref.ref(spec, lambda _: _NODE_INDEXES.pop(key, None))
    _NODE_INDEXES[key] = (reference, nodes, len(nodes), index)
    return index


def brief_list(names: Sequence[str], *, limit: int = 6) -> str:
    """At most ``limit`` of ``names``, comma-separated, then how many were left out.

    >>> brief_list(["a", "b"]), brief_list([str(n) for n in range(10)], limit=3), brief_list([])
    ('a, b', '0, 1, 2 and 7 more', 'none')
    """
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def split_reference(reference: str) -> tuple[str, str]:
    """``(namespace, key)`` that a reference string reads from the cache: ``NODE.OUTPUT`` or
    ``inputs.KEY``; a bare ``KEY`` (older Rust files) means ``inputs.KEY``. The one parser of
    references: :attr:`InputSpec.source`, the checks and the run's plan all read them through it.

    >>> split_reference("fetch.rows"), split_reference("inputs.url"), split_reference("url")
    (('fetch', 'rows'), ('inputs', 'url'), ('inputs', 'url'))
    """
    namespace, dot, key = reference.partition(".")
    return (namespace, key) if dot else ("inputs", namespace)


def node_dependencies(node: NodeSpec) -> list[str]:
    """``node``'s explicit dependencies plus the nodes its inputs reference, without repeats."""
    found = dict.fromkeys(node.dependencies)
    for spec in node.inputs:
        reference = spec.reference
        if reference is not None:
            namespace, _ = split_reference(reference)
            if namespace != "inputs":
                found[namespace] = None  # an id already there keeps its place
    return list(found)
