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

import bisect
import os
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dagger_nb._gc import collector_paused
from dagger_nb.dag import _yaml
from dagger_nb.dag._yaml import MAX_ALIAS_EXPANSION as MAX_ALIAS_EXPANSION
from dagger_nb.dag._yaml import MAX_DEPTH as MAX_DEPTH
from dagger_nb.dag._yaml import MAX_DOCUMENT_CHARS as MAX_DOCUMENT_CHARS
from dagger_nb.dag._yaml import MAX_NUMBER_CHARS as MAX_NUMBER_CHARS
from dagger_nb.dag.spec import DagConfig, NodeSpec, WorkflowSpec
from dagger_nb.dag.validation import check_workflow
from dagger_nb.errors import Problem, WorkflowSpecError

Location = tuple[Any, ...]
M = TypeVar("M", bound=BaseModel)
_UNKNOWN_TAG = re.compile(r"could not determine a constructor for the tag '([^']*)'")
_UNPARSED: Any = object()

#: Problems listed for one file; the rest are counted.
MAX_PROBLEMS = 50
# A parse error found by libyaml is re-read by the pure-Python parser (whose messages are clearer
# and the same whether libyaml is installed or not) when it lies this close to the start.
_REPARSE_WITHIN = 200_000


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
    with collector_paused():
        spec = document.build(actions=actions, default_name=default_name)
        document.root = None  # the node tree goes before the collector resumes and has to walk it
    if document.problems or spec is None:
        raise WorkflowSpecError(_capped(sorted(document.problems, key=lambda p: (p.path or "", p.line or 0))))
    return spec


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    left_out = len(problems) - MAX_PROBLEMS
    first = problems[0]
    summary = f"{left_out} more problem{'s' if left_out > 1 else ''} not shown (fix these first)"
    return [*problems[:MAX_PROBLEMS], Problem(first.path, None, first.workflow, None, summary)]


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
        self.root: yaml.Node | None = None
        self.problems: list[Problem] = []
        self.workflow: str | None = None
        self.duplicate_keys: list[tuple[int, int, str]] = []  # see Bounds.duplicates

    def problem(self, message: str, *, at: Location = (), node: str | None = None) -> None:
        # Ids and names come from the file: a 10 MB id must not make a 10 MB message.
        shown_node = None if node is None else _short(node, limit=80)
        self.problems.append(Problem(self.path, self.line_of(at), self.workflow, shown_node, _short(message, limit=500)))

    def text_problem(self, line: int | None, message: str) -> None:
        """A problem of the text itself, found before there is a workflow to name."""
        shown = None if line is None else line + self.line_offset
        self.problems.append(Problem(self.path, shown, None, None, message))

    def line_of(self, location: Location) -> int | None:
        """The line of the deepest part of ``location`` found in the document (a key's own line)."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in location:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value in (part, str(part)):
                        line, node = key_node.start_mark.line + 1, value_node
                        break
                else:
                    break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line + self.line_offset

    def node_index_at(self, mark_line: int) -> int | None:
        """The index of the node written around ``mark_line`` (a 0-based YAML mark line), if any."""
        nodes = None if self.root is None else _yaml.value_of(self.root, "nodes")
        if not isinstance(nodes, yaml.SequenceNode) or not nodes.value:
            return None
        if not nodes.value[0].start_mark.line <= mark_line <= nodes.end_mark.line:
            return None
        starts = [item.start_mark.line for item in nodes.value]
        return bisect.bisect_right(starts, mark_line) - 1

    def build(self, *, actions: Collection[str] | None, default_name: str | None) -> WorkflowSpec | None:
        data = self._parse()
        if data is _UNPARSED:
            return None
        if isinstance(data, dict):
            if default_name is not None and "name" not in data:
                data = {"name": default_name, **data}
            if isinstance(data.get("name"), str):
                self.workflow = _short(data["name"], limit=80)
        for mapping_line, line, message in self.duplicate_keys:
            owner = _node_id(data, self.node_index_at(mapping_line))
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
        partial = {position for position, (_, _, complete) in enumerate(nodes) if not complete}
        for message, index, key in check_workflow(spec, actions=actions, partial=partial):
            if index is not None and spec.nodes[index].action == _NO_ACTION and key == ("action",):
                continue
            location: Location = ("nodes", nodes[index][0], *key) if index is not None else key
            node_id = spec.nodes[index].id if index is not None else None
            self.problem(message, at=location, node=node_id)
        return spec

    def _parse(self) -> Any:
        """The document's data, or ``_UNPARSED`` after recording why it could not be read."""
        limit = _yaml.MAX_DOCUMENT_CHARS
        if len(self.text) > limit:
            line = self.text.count("\n", 0, limit) + 1
            self.text_problem(line, f"the document is longer than {limit:,} characters; "
                                    "split the workflow or load its data at run time")
            return _UNPARSED
        loader = self._compose()
        if loader is None:
            return _UNPARSED
        try:
            if self.root is None:
                self.text_problem(None, "the document is empty; a workflow needs 'name' and 'nodes'")
                return _UNPARSED
            bounds = _yaml.Bounds(self.text, self.text_problem, line_offset=self.line_offset)
            within = bounds.check(self.root)
            self.duplicate_keys = bounds.duplicates
            if not within:
                return _UNPARSED
            if not bounds.shared:
                try:
                    return _yaml.construct_plain(loader, self.root)
                except _yaml.NotPlain:
                    pass
            return loader.construct_document(self.root)
        except yaml.YAMLError as error:
            self._yaml_problem(error)
        except (ValueError, RecursionError) as error:
            self.text_problem(None, f"invalid YAML: {error}")
        finally:
            loader.dispose()
        return _UNPARSED

    def _compose(self) -> Any:
        """A loader holding the document's node tree in ``self.root``, or None after a problem."""
        if _yaml.FastSpecLoader is not None:
            loader = None
            try:
                loader = _yaml.FastSpecLoader(self.text)
                self.root = loader.get_single_node()
                return loader
            except yaml.MarkedYAMLError as error:
                mark = error.problem_mark or error.context_mark
                if mark is not None and "maximum nesting depth" in str(error.problem):
                    self.text_problem(mark.line + 1, f"nested more than {MAX_DEPTH} levels deep")
                    return None
                if mark is not None and mark.index > _REPARSE_WITHIN:
                    self._yaml_problem(error)
                    return None
            except (yaml.YAMLError, UnicodeEncodeError):
                pass  # the pure-Python parser below names the position of the unreadable character
            if loader is not None:
                loader.dispose()
        try:
            loader = _yaml.SafeSpecLoader(self.text)
            self.root = loader.get_single_node()
            return loader
        except yaml.YAMLError as error:
            self._yaml_problem(error)
        except RecursionError:
            self.text_problem(None, f"invalid YAML: nested more than {MAX_DEPTH} levels deep")
        return None

    def _yaml_problem(self, error: yaml.YAMLError) -> None:
        if isinstance(error, yaml.MarkedYAMLError):
            mark = error.problem_mark or error.context_mark
            reason = " ".join(part for part in (error.context, error.problem) if part)
            unknown_tag = _UNKNOWN_TAG.search(reason)
            if unknown_tag:
                tag = unknown_tag.group(1).replace("tag:yaml.org,2002:", "!!")
                reason = f"unsupported YAML tag '{tag}' (allowed: !Immediate, !Linear, !Exponential)"
            if mark is None:
                self.text_problem(None, f"invalid YAML: {reason}")
            else:
                self.text_problem(mark.line + 1, f"invalid YAML (column {mark.column + 1}): {reason}")
        elif isinstance(error, yaml.reader.ReaderError):
            line = self.text.count("\n", 0, error.position) + 1
            character = error.character
            shown = f"U+{character:04X}" if isinstance(character, int) else repr(character)
            self.text_problem(line, f"invalid YAML: character {shown} is not allowed")
        else:
            self.text_problem(None, f"invalid YAML: {error}")

    def _nodes(self, raw: Any) -> list[tuple[int, NodeSpec, bool]]:
        """``(index in file, node, complete)``: a node that failed validation but has an id
        is kept without its bad parts, so its references and dependencies are still checked
        (and references to it are not reported as unknown); ``complete`` is False then."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem(f"'nodes' must be a list of nodes, got {_kind(raw)}", at=("nodes",))
            return []
        nodes: list[tuple[int, NodeSpec, bool]] = []
        for index, item in enumerate(raw):
            node = self._validate(NodeSpec, item, at=("nodes", index))
            if node is not None:
                nodes.append((index, node, True))
                continue
            salvaged = _salvage(item, self.failed_at)
            if salvaged is not None:
                nodes.append((index, salvaged, False))
        return nodes

    def _validate(self, model: type[M], raw: Any, *, at: Location) -> M | None:
        node_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        self.failed_at: list[Location] = []
        try:
            return model.model_validate(raw)
        except ValidationError as error:
            for detail in error.errors():
                self.failed_at.append(tuple(detail["loc"]))
                location = (*at, *detail["loc"])
                self.problem(_describe(model, detail, at), at=location, node=node_id)
        except RecursionError:
            self.problem("value is nested too deeply (or refers to itself)", at=at, node=node_id)
        return None


_NO_ACTION = "?"


def _salvage(item: Any, failed_at: list[Location]) -> NodeSpec | None:
    """``item`` as a node without the keys (or inputs) that failed validation; None without an id."""
    if not (isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]):
        return None
    trimmed = dict(item)
    for loc in failed_at:
        if not loc:
            continue
        key = loc[0]
        inputs = trimmed.get("inputs")
        if key == "inputs" and len(loc) > 1 and isinstance(loc[1], int) and isinstance(inputs, list):
            # Keep positions (problems point at them by index) with an input that refers to nothing.
            trimmed["inputs"] = [*inputs[: loc[1]], {"name": "?", "value": None}, *inputs[loc[1] + 1 :]]
        else:
            trimmed.pop(key, None)
    trimmed.setdefault("action", _NO_ACTION)
    try:
        return NodeSpec.model_validate(trimmed)
    except (ValidationError, RecursionError):
        dependencies = item.get("dependencies")
        if not (isinstance(dependencies, list) and all(isinstance(d, str) for d in dependencies)):
            dependencies = []
        return NodeSpec(id=item["id"], action=_NO_ACTION, dependencies=dependencies)


def _node_id(data: Any, index: int | None) -> str | None:
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if index is not None and isinstance(nodes, list) and index < len(nodes) and isinstance(nodes[index], dict):
        node_id = nodes[index].get("id")
        return node_id if isinstance(node_id, str) else None
    return None


def _describe(model: type[BaseModel], detail: Any, at: Location) -> str:
    loc = tuple(detail["loc"])
    section = "config " if at == ("config",) else ""
    if detail["type"] == "extra_forbidden" and loc:
        key = str(loc[-1])
        owner = _model_at(model, loc[:-1])
        return f"unknown {section}key '{_short(key)}'{_suggestion(key, owner.model_fields if owner else ())}"
    if detail["type"] == "missing":
        return f"missing required {section}key '{_dotted(loc)}'"
    if detail["type"] == "model_type" and not loc:
        return f"must be a mapping, got {_kind(detail['input'])}"
    message = detail["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    message = message[:1].lower() + message[1:]
    got = detail.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {_shown(got)})"
    if not loc:
        return message
    return f"{section}key '{_dotted(loc)}': {message}{shown}"


def _shown(value: Any) -> str:
    try:
        return _short(repr(value))
    except ValueError:  # an integer too long to print
        return f"a {type(value).__name__}"


def _short(text: str, *, limit: int = 60) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}... ({len(text):,} characters)"


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
    import difflib  # only a file with a mistake needs it

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

