r"""Graphviz DOT writing and SVG rendering shared by every paradigm.

Everything that ends up in a DOT file goes through :func:`quote`, so node ids,
descriptions and error messages containing quotes, ``<``, ``>``, ``&`` or
newlines still give valid DOT, and the SVG Graphviz makes from it escapes them.

>>> dot = Digraph("demo")
>>> dot.node("a", label="load\n<csv>", fillcolor=STATUS_COLOURS["succeeded"])
>>> dot.edge("a", "b")
>>> print(dot.source(), end="")
digraph "demo" {
  rankdir=LR;
  node [shape=box, style="rounded,filled", fontname="Helvetica", fillcolor="white"];
  "a" [label="load\n<csv>", fillcolor="#9be29b"];
  "a" -> "b";
}
"""

from __future__ import annotations

import shutil
import subprocess

from dagger_nb.errors import GraphvizError, GraphvizNotFound

#: Fill colour for each status used by runs, tasks and agents.
STATUS_COLOURS: dict[str, str] = {
    "succeeded": "#9be29b",
    "cached": "#a8d8ea",
    "completed": "#9be29b",
    "failed": "#f28b82",
    "running": "#8ab4f8",
    "in_progress": "#8ab4f8",
    "skipped": "#d0d0d0",
    "pending": "#ffffff",
    "cancelled": "#fbbc66",
    "blocked": "#fbbc66",
    "paused": "#fdd663",
    "accepted": "#c58af9",
    "rejected": "#a0522d",
}


def quote(text: object) -> str:
    """Return ``text`` as a DOT double-quoted string, safe for any content."""
    escaped = (
        str(text)
        .replace("&", "&amp;")  # Graphviz decodes entities in labels: keep a literal "&amp;" literal
        .replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\r\n", "\n")
        .replace("\r", "\n")
        .replace("\n", "\\n")
    )
    return f'"{escaped}"'


def _attributes(attrs: dict[str, object]) -> str:
    return ", ".join(f"{key}={quote(value)}" for key, value in attrs.items() if value is not None)


class Digraph:
    """A minimal DOT ``digraph`` builder: nodes, edges and clusters, all quoted."""

    def __init__(self, name: str, *, rankdir: str = "LR") -> None:
        self.name = name
        self._lines: list[str] = [f"rankdir={rankdir};", _DEFAULT_NODE_STYLE]

    def node(self, node_id: str, **attrs: object) -> None:
        """Add a node; keyword arguments become DOT attributes."""
        rendered = _attributes(attrs)
        self._lines.append(f"{quote(node_id)} [{rendered}];" if rendered else f"{quote(node_id)};")

    def edge(self, tail: str, head: str, **attrs: object) -> None:
        """Add an edge ``tail -> head``."""
        rendered = _attributes(attrs)
        suffix = f" [{rendered}]" if rendered else ""
        self._lines.append(f"{quote(tail)} -> {quote(head)}{suffix};")

    def graph_attributes(self, **attrs: object) -> None:
        """Set attributes of the whole graph (``label`` and ``labelloc`` for a title)."""
        self._lines.append(f"graph [{_attributes(attrs)}];")

    def cluster(self, cluster_id: str, label: str, members: list[str]) -> None:
        """Group ``members`` in a labelled box."""
        inner = " ".join(f"{quote(member)};" for member in members)
        self._lines.append(
            f"subgraph {quote('cluster_' + cluster_id)} {{ label={quote(label)}; "
            f'style="dashed"; {inner} }}'
        )

    def source(self) -> str:
        """The DOT text."""
        body = "\n".join(f"  {line}" for line in self._lines)
        return f"digraph {quote(self.name)} {{\n{body}\n}}\n"


_DEFAULT_NODE_STYLE = (
    'node [shape=box, style="rounded,filled", fontname="Helvetica", fillcolor="white"];'
)


def dot_available() -> bool:
    """True when Graphviz's ``dot`` is on PATH."""
    return shutil.which("dot") is not None


def render_svg(dot_text: str, *, timeout: float = 60.0) -> str:
    """Render DOT text to an SVG document with Graphviz's ``dot``.

    Raises :class:`GraphvizNotFound` (saying how to install it) when ``dot`` is
    missing, and :class:`GraphvizError` with Graphviz's message when the DOT is invalid.
    """
    executable = shutil.which("dot")
    if executable is None:
        raise GraphvizNotFound()
    completed = subprocess.run(
        [executable, "-Tsvg"],
        input=dot_text.encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise GraphvizError(completed.stderr.decode().strip())
    return completed.stdout.decode()
