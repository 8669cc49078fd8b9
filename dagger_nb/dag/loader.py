"""Load workflow YAML, collecting every problem with the line it comes from.

>>> spec = load_workflow('''
... name: demo
... nodes:
...   - {id: a, action: load}
...   - {id: b, action: clean, dependencies: [a]}
... ''')
>>> [node.id for node in spec.nodes]
['a', 'b']
>>> load_workflow("name: demo\\nnodes:\\n  - {id: a, action: load, dependecies: []}\\n")
Traceback (most recent call last):
...
dagger_nb.errors.WorkflowSpecError: <string>:3: workflow 'demo', node 'a': unknown key 'dependecies' (did you mean 'dependencies'?)
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dagger_nb.dag.spec import DagConfig, NodeSpec, WorkflowSpec
from dagger_nb.dag.validation import check_workflow
from dagger_nb.errors import Problem, WorkflowSpecError

Location = tuple[Any, ...]
M = TypeVar("M", bound=BaseModel)
_UNKNOWN_TAG = re.compile(r"could not determine a constructor for the tag '([^']*)'")
_UNPARSED: Any = object()


class _SpecLoader(yaml.SafeLoader):
    """The safe loader plus exactly the retry-strategy tags of Rust Dagger files."""


def _tagged(kind: str) -> Callable[[_SpecLoader, yaml.Node], dict[str, Any]]:
    def construct(loader: _SpecLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.MappingNode):
            return {kind: loader.construct_mapping(node, deep=True)}
        if isinstance(node, yaml.ScalarNode) and loader.construct_scalar(node) in ("", None):
            return {kind: {}}
        raise yaml.constructor.ConstructorError(
            None, None, f"tag '!{kind}' takes a mapping of parameters", node.start_mark
        )

    return construct


for _tag in ("Immediate", "Linear", "Exponential"):
    _SpecLoader.add_constructor(f"!{_tag}", _tagged(_tag))


def load_workflow(
    source: str | os.PathLike[str], *, actions: Collection[str] | None = None
) -> WorkflowSpec:
    """Load one workflow from a path or from YAML text, checking it statically.

    ``actions``, when given, are the registered action names: a node naming
    another action is a problem. Every problem found is reported at once in a
    :class:`WorkflowSpecError`, each with its line.
    """
    text, path = _read_source(source)
    return parse_workflow(text, path=path, actions=actions)


def load_workflows(
    folder: str | os.PathLike[str], *, actions: Collection[str] | None = None
) -> list[WorkflowSpec]:
    """Load every ``.yaml``/``.yml`` file in ``folder`` (sorted by name).

    Problems from all files are reported together in one :class:`WorkflowSpecError`.
    """
    directory = Path(folder)
    if not directory.is_dir():
        raise WorkflowSpecError([Problem(str(directory), None, None, None, "not a folder")])
    specs: list[WorkflowSpec] = []
    problems: list[Problem] = []
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for file in files:
        try:
            specs.append(load_workflow(file, actions=actions))
        except WorkflowSpecError as error:
            problems.extend(error.problems)
    if problems:
        raise WorkflowSpecError(problems)
    return specs


def parse_workflow(
    text: str,
    *,
    path: str = "<string>",
    actions: Collection[str] | None = None,
    line_offset: int = 0,
    default_name: str | None = None,
) -> WorkflowSpec:
    """Parse YAML ``text``; ``path`` names it in problems, ``line_offset`` shifts lines.

    ``default_name`` is used when the text has no ``name:`` (a notebook cell
    names its workflow on the magic line).
    """
    document = _Document(text, path=path, line_offset=line_offset)
    spec = document.build(actions=actions, default_name=default_name)
    if document.problems or spec is None:
        raise WorkflowSpecError(sorted(document.problems, key=lambda p: (p.path or "", p.line or 0)))
    return spec


def _read_source(source: str | os.PathLike[str]) -> tuple[str, str]:
    if isinstance(source, os.PathLike):
        return _read_file(Path(source))
    looks_like_path = "\n" not in source and len(source) < 4096
    if looks_like_path:
        candidate = Path(source)
        try:
            if candidate.is_file():
                return _read_file(candidate)
        except OSError:
            pass
        if source.endswith((".yaml", ".yml")):
            raise WorkflowSpecError([Problem(source, None, None, None, "file not found")])
    return source, "<string>"


def _read_file(path: Path) -> tuple[str, str]:
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise WorkflowSpecError([Problem(str(path), None, None, None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise WorkflowSpecError([Problem(str(path), None, None, None, f"cannot read: {error}")]) from None


class _Document:
    """One YAML text on its way to a :class:`WorkflowSpec`, with a line for every location."""

    def __init__(self, text: str, *, path: str, line_offset: int) -> None:
        self.text = text
        self.path = path
        self.line_offset = line_offset
        self.lines: dict[Location, int] = {}
        self.problems: list[Problem] = []
        self.workflow: str | None = None
        self.duplicate_keys: list[tuple[Location, int, str]] = []

    def problem(self, message: str, *, at: Location = (), node: str | None = None) -> None:
        self.problems.append(Problem(self.path, self.line_of(at), self.workflow, node, message))

    def line_of(self, location: Location) -> int | None:
        for end in range(len(location), -1, -1):
            line = self.lines.get(tuple(location[:end]))
            if line is not None:
                return line
        return None

    def build(self, *, actions: Collection[str] | None, default_name: str | None) -> WorkflowSpec | None:
        data = self._parse()
        if data is _UNPARSED:
            return None
        if isinstance(data, dict):
            if default_name is not None and "name" not in data:
                data = {"name": default_name, **data}
            if isinstance(data.get("name"), str):
                self.workflow = data["name"]
        for where, line, message in self.duplicate_keys:
            owner = _node_id(data, where) if isinstance(data, dict) else None
            self.problems.append(Problem(self.path, line, self.workflow, owner, message))
        if not isinstance(data, dict):
            self.problem(f"a workflow must be a mapping with 'name' and 'nodes', got {_kind(data)}")
            return None
        raw_config = data.get("config")
        config = self._validate(DagConfig, {} if raw_config is None else raw_config, at=("config",))
        nodes = self._nodes(data.get("nodes", []))
        header = {key: value for key, value in data.items() if key not in ("config", "nodes")}
        workflow = self._validate(WorkflowSpec, header, at=())
        # Check the semantics of whatever did validate, so one bad node does not hide the rest.
        spec = (workflow or WorkflowSpec(name=self.workflow or "workflow")).model_copy(
            update={"config": config or DagConfig(), "nodes": [node for _, node, _ in nodes]}
        )
        for message, index, key in check_workflow(spec, actions=actions):
            if index is not None and nodes[index][2] and key == ("action",):
                continue
            location: Location = ("nodes", nodes[index][0], *key) if index is not None else key
            node_id = spec.nodes[index].id if index is not None else None
            self.problem(message, at=location, node=node_id)
        return spec

    def _parse(self) -> Any:
        """The document's data, or ``_UNPARSED`` after recording why it could not be read."""
        loader: _SpecLoader | None = None
        try:
            loader = _SpecLoader(self.text)
            root = loader.get_single_node()
            if root is None:
                self.problem("the document is empty; a workflow needs 'name' and 'nodes'")
                return _UNPARSED
            self._index(root, ())
            return loader.construct_document(root)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            reason = " ".join(part for part in (error.context, error.problem) if part)
            unknown_tag = _UNKNOWN_TAG.search(reason)
            if unknown_tag:
                tag = unknown_tag.group(1).replace("tag:yaml.org,2002:", "!!")
                reason = f"unsupported YAML tag '{tag}' (allowed: !Immediate, !Linear, !Exponential)"
            if mark is None:
                self.problems.append(Problem(self.path, None, None, None, f"invalid YAML: {reason}"))
            else:
                self.problems.append(
                    Problem(self.path, mark.line + 1 + self.line_offset, None, None,
                            f"invalid YAML (column {mark.column + 1}): {reason}")
                )
        except yaml.reader.ReaderError as error:
            line = self.text.count("\n", 0, error.position) + 1 + self.line_offset
            self.problems.append(Problem(self.path, line, None, None,
                                         f"invalid YAML: character {error.character!r} is not allowed"))
        except yaml.YAMLError as error:
            self.problems.append(Problem(self.path, None, None, None, f"invalid YAML: {error}"))
        except RecursionError:
            self.problems.append(Problem(self.path, None, None, None, "invalid YAML: nested too deeply"))
        finally:
            if loader is not None:
                loader.dispose()
        return _UNPARSED

    def _index(self, root: yaml.Node, location: Location) -> None:
        # Iterative walk: arbitrarily deep YAML must not exhaust the stack.
        stack: list[tuple[yaml.Node, Location]] = [(root, location)]
        seen: set[int] = set()
        while stack:
            node, where = stack.pop()
            self.lines.setdefault(where, node.start_mark.line + 1 + self.line_offset)
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                keys_seen: dict[Any, int] = {}
                for key_node, value_node in node.value:
                    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                    line = key_node.start_mark.line + 1 + self.line_offset
                    if key is not None and key in keys_seen:
                        message = f"duplicate key '{key}' (first at line {keys_seen[key]})"
                        self.duplicate_keys.append(((*where, key), line, message))
                    elif key is not None:
                        keys_seen[key] = line
                    self.lines.setdefault((*where, key), line)
                    stack.append((value_node, (*where, key)))
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    stack.append((item, (*where, index)))

    def _nodes(self, raw: Any) -> list[tuple[int, NodeSpec, bool]]:
        """``(index in file, node, is_placeholder)``; a node that failed validation
        but has an id becomes a placeholder so references to it are not reported twice."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem(f"'nodes' must be a list of nodes, got {_kind(raw)}", at=("nodes",))
            return []
        nodes: list[tuple[int, NodeSpec, bool]] = []
        for index, item in enumerate(raw):
            node = self._validate(NodeSpec, item, at=("nodes", index))
            if node is not None:
                nodes.append((index, node, False))
            elif isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                dependencies = item.get("dependencies")
                if not (isinstance(dependencies, list) and all(isinstance(d, str) for d in dependencies)):
                    dependencies = []
                nodes.append((index, NodeSpec(id=item["id"], action="?", dependencies=dependencies), True))
        return nodes

    def _validate(self, model: type[M], raw: Any, *, at: Location) -> M | None:
        node_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        try:
            return model.model_validate(raw)
        except ValidationError as error:
            for detail in error.errors():
                location = (*at, *detail["loc"])
                self.problem(_describe(model, detail, at), at=location, node=node_id)
        except RecursionError:
            self.problem("value is nested too deeply (or refers to itself)", at=at, node=node_id)
        return None


def _node_id(data: dict[str, Any], location: Location) -> str | None:
    nodes = data.get("nodes")
    if len(location) > 2 and location[0] == "nodes" and isinstance(nodes, list):
        index = location[1]
        if isinstance(index, int) and index < len(nodes) and isinstance(nodes[index], dict):
            node_id = nodes[index].get("id")
            return node_id if isinstance(node_id, str) else None
    return None


def _describe(model: type[BaseModel], detail: Any, at: Location) -> str:
    loc = tuple(detail["loc"])
    section = "config " if at == ("config",) else ""
    if detail["type"] == "extra_forbidden" and loc:
        key = str(loc[-1])
        owner = _model_at(model, loc[:-1])
        return f"unknown {section}key '{key}'{_suggestion(key, owner.model_fields if owner else ())}"
    if detail["type"] == "missing":
        return f"missing required {section}key '{_dotted(loc)}'"
    if detail["type"] == "model_type" and not loc:
        return f"must be a mapping, got {_kind(detail['input'])}"
    message = detail["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    message = message[:1].lower() + message[1:]
    got = detail.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
    if not loc:
        return message
    return f"{section}key '{_dotted(loc)}': {message}{shown}"


def _model_at(model: type[BaseModel], loc: Location) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        current = next((arg for arg in inner if isinstance(arg, type) and issubclass(arg, BaseModel)), None)
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _suggestion(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _dotted(loc: Location) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _kind(value: Any) -> str:
    return {list: "a list", str: "text", dict: "a mapping", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )

