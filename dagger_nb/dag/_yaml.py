"""Reading YAML text into PyYAML nodes and data, within documented bounds.

The loader (:mod:`dagger_nb.dag.loader`) turns the data into a workflow; this module
parses (with libyaml's C parser when PyYAML has it), checks what a document may expand
to on the parsed nodes before anything is built from them (:class:`Bounds`), and
builds the data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import yaml

_SURROGATE = re.compile("[\ud800-\udfff]")

#: Longest workflow text read, in characters.
MAX_DOCUMENT_CHARS = 32 * 1024 * 1024
#: Deepest nesting of mappings and lists (a workflow itself needs 5 levels; the rest is for literals).
MAX_DEPTH = 100
#: How many values YAML aliases (``*name``) may add to a document when they are expanded.
MAX_ALIAS_EXPANSION = 100_000
#: Longest number literal, in characters.
MAX_NUMBER_CHARS = 100
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
_LONG_NUMBER = re.compile(f"[-+0-9a-fA-FxXoO_:.]{{{MAX_NUMBER_CHARS + 1}}}")


class QuickResolver(yaml.resolver.Resolver):
    """PyYAML's resolver, answering at once for the common case: a plain scalar whose first
    character starts no implicit type (most ids and names), and every collection."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            resolvers = self.yaml_implicit_resolvers
            if implicit[0] and value and value[0] not in resolvers and None not in resolvers:
                return self.DEFAULT_SCALAR_TAG
        elif not self.yaml_path_resolvers:
            return self.DEFAULT_SEQUENCE_TAG if kind is yaml.SequenceNode else self.DEFAULT_MAPPING_TAG
        return super().resolve(kind, value, implicit)


class SafeSpecLoader(yaml.SafeLoader, QuickResolver):
    """The safe loader plus exactly the retry-strategy tags of Rust Dagger files."""


FastSpecLoader: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class CSpecLoader(yaml.CSafeLoader, QuickResolver):
        """The same as :class:`SafeSpecLoader` with libyaml's C parser (nodes keep their lines)."""

    FastSpecLoader = CSpecLoader


def _tagged(kind: str) -> Callable[[Any, yaml.Node], dict[str, Any]]:
    def construct(loader: Any, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.MappingNode):
            return {kind: loader.construct_mapping(node, deep=True)}
        if isinstance(node, yaml.ScalarNode) and loader.construct_scalar(node) in ("", None):
            return {kind: {}}
        raise yaml.constructor.ConstructorError(
            None, None, f"tag '!{kind}' takes a mapping of parameters", node.start_mark
        )

    return construct


for _tag in ("Immediate", "Linear", "Exponential"):
    for _loader in (SafeSpecLoader, FastSpecLoader):
        if _loader is not None:
            _loader.add_constructor(f"!{_tag}", _tagged(_tag))



class Bounds:
    """Checks what a document may expand to, on the YAML nodes, before anything is constructed.

    Each problem goes to ``report(line, message)`` (lines counted from 1 in ``text``);
    ``duplicates`` collects ``(mapping's mark line, key line, message)`` for every
    duplicate key, its lines shifted by ``line_offset``.
    """

    def __init__(self, text: str, report: Callable[[int, str], None], *, line_offset: int = 0) -> None:
        self.text = text
        self.report = report
        self.line_offset = line_offset
        self.ok = True
        self.shared = False
        self.duplicates: list[tuple[int, int, str]] = []

    def fail(self, node: yaml.Node, message: str, *, line: int | None = None) -> None:
        self.ok = False
        self.report(line if line is not None else node.start_mark.line + 1, message)

    def check(self, root: yaml.Node) -> bool:
        """Depth, duplicate keys, lone surrogates, over-long numbers; then aliases, if any."""
        text = self.text
        # Aliases need an anchor ('&'); lone surrogates an escape; long numbers a long run of digits.
        # Most files have none of these, and the walk below is then at its leanest.
        may_share = "&" in text
        scalars = "\\u" in text or "\\U" in text or _LONG_NUMBER.search(text) is not None
        mapping, scalar, limit = yaml.MappingNode, yaml.ScalarNode, MAX_DEPTH
        seen: set[int] = set()
        shared = False
        stack: list[tuple[yaml.Node, int]] = [(root, 1)]
        pop, push = stack.pop, stack.append
        while stack:
            node, depth = pop()
            if may_share:
                if id(node) in seen:
                    shared = True
                    continue
                seen.add(id(node))
            kind = type(node)
            if kind is scalar:
                if scalars:
                    self.scalar(node)
            elif depth > limit:
                self.fail(node, f"nested more than {MAX_DEPTH} levels deep")
                return False
            elif kind is mapping:
                pairs = node.value
                if len(pairs) > 1 and len({key.value for key, _ in pairs if type(key) is scalar}) < len(pairs):
                    self.record_duplicates(node)
                for key_node, value_node in pairs:
                    if type(key_node) is not scalar or scalars:
                        push((key_node, depth + 1))
                    push((value_node, depth + 1))
            else:
                stack.extend([(item, depth + 1) for item in node.value])
        self.shared = shared
        if self.ok and shared:
            self.aliases(root, unique=len(seen))
        return self.ok

    def scalar(self, node: yaml.Node) -> None:
        value = node.value
        if not value.isascii():
            surrogate = _SURROGATE.search(value)
            if surrogate:
                self.fail(node, f"text contains a lone surrogate {surrogate.group()!r}, which cannot be "
                                "encoded as UTF-8 (write the character itself, or a \\U escape)")
        elif len(value) > MAX_NUMBER_CHARS and node.tag in _NUMBER_TAGS:
            self.fail(node, f"a number longer than {MAX_NUMBER_CHARS} characters ({len(value):,})")

    def record_duplicates(self, node: yaml.Node) -> None:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1 + self.line_offset
            if key_node.value in first:
                message = f"duplicate key '{key_node.value}' (first at line {first[key_node.value]})"
                self.duplicates.append((node.start_mark.line, line, message))
            else:
                first[key_node.value] = line

    def aliases(self, root: yaml.Node, *, unique: int) -> None:
        """Expanded size and depth through aliases, in one post-order pass over the shared nodes."""
        limit = unique + MAX_ALIAS_EXPANSION
        done: dict[int, tuple[int, int]] = {}  # size, height
        totals: dict[int, list[int]] = {id(root): [1, 0]}
        stack: list[tuple[yaml.Node, Iterator[tuple[yaml.Node, int]]]] = [(root, children(root))]
        while stack:
            node, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                stack.pop()
                size, height = totals.pop(id(node))
                height += 1
                if size > limit:
                    self.fail(node, f"YAML aliases expand this value past {MAX_ALIAS_EXPANSION:,} "
                                    "extra values (an alias bomb?)")
                    return
                if height > MAX_DEPTH:
                    self.fail(node, f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
                    return
                done[id(node)] = (size, height)
                if stack:
                    parent = totals[id(stack[-1][0])]
                    parent[0] += size
                    parent[1] = max(parent[1], height)
                continue
            child, line = step
            if id(child) in totals:
                self.fail(child, "a YAML alias refers to a value that contains it (a recursive alias)",
                          line=line)
                return
            if id(child) in done:
                size, height = done[id(child)]
                parent = totals[id(node)]
                parent[0] += size
                parent[1] = max(parent[1], height)
            else:
                totals[id(child)] = [1, 0]
                stack.append((child, children(child)))


class NotPlain(Exception):
    """The document needs PyYAML's full constructor (merge keys, unhashable keys, unknown tags)."""


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_PLAIN_KEY_TAGS = frozenset({_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:null",
                             "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"})


def construct_plain(loader: Any, root: yaml.Node) -> Any:
    """The same data as ``loader.construct_document(root)`` for a tree without shared nodes,
    built directly: PyYAML's constructor costs several calls per value.

    Raises :class:`NotPlain` when the tree needs the full constructor.
    """
    constructors = loader.yaml_constructors
    scalar, sequence, mapping = yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode

    def build(node: yaml.Node) -> Any:
        kind, tag = type(node), node.tag
        if kind is scalar and tag == _STR:
            return node.value
        if kind is sequence and tag == _SEQ:
            return [build(item) for item in node.value]
        if kind is mapping and tag == _MAP:
            built: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag not in _PLAIN_KEY_TAGS:
                    raise NotPlain  # merge keys, `=` keys, collections as keys
                built[build(key_node)] = build(value_node)
            return built
        if tag not in constructors:
            raise NotPlain
        return loader.construct_object(node, deep=True)

    return build(root)


def children(node: yaml.Node) -> Iterator[tuple[yaml.Node, int]]:
    """Each child of ``node`` with the line it is written on."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            yield key_node, line
            yield value_node, line
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield item, item.start_mark.line + 1


def value_of(node: yaml.Node, key: str) -> yaml.Node | None:
    """The value node of ``key`` in mapping ``node``; None if absent or not a mapping."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return value_node
    return None


