"""Tracebacks of failed actions, trimmed to the frames of the user's code.

The frames of dagger-nb itself, of the standard library and of anyio say how
the action was called, not why it failed: they are left out (the last frame is
kept when nothing else remains). A frame of code defined in a notebook cell
reads ``Cell In[3], line 4`` as IPython writes it, with the line's source.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent) + os.sep
_STDLIB = str(Path(os.__file__).resolve().parent) + os.sep
_LIBRARIES = (f"{os.sep}anyio{os.sep}", f"{os.sep}sniffio{os.sep}", f"{os.sep}exceptiongroup{os.sep}")
_MAX_CHAIN = 5
_MAX_FRAMES = 30


def is_user_frame(filename: str) -> bool:
    """False for frames of dagger-nb, the standard library, anyio."""
    if filename.startswith("<frozen "):
        return False
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        return True
    if path.startswith(_PACKAGE) or (path.startswith(_STDLIB) and "site-packages" not in path):
        return False
    return not any(part in path for part in _LIBRARIES)


def cell_label(filename: str) -> str | None:
    """``Cell In[N]`` for a file IPython made for cell N of this kernel, else None."""
    ipython_module = sys.modules.get("IPython")  # only when IPython is already loaded: the core never imports it
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    compiler = getattr(shell, "compile", None)
    number = getattr(compiler, "_filename_map", {}).get(filename)
    return f"Cell In[{number}]" if number is not None else None


def _frame_lines(frame: traceback.FrameSummary) -> list[str]:
    where = cell_label(frame.filename)
    where = f'{where}, line {frame.lineno}' if where else f'File "{frame.filename}", line {frame.lineno}'
    lines = [f"  {where}, in {frame.name}"]
    if frame.line:
        lines.append(f"    {frame.line.strip()}")
    return lines


def _one(exception: BaseException) -> list[str]:
    frames = traceback.extract_tb(exception.__traceback__)
    kept = [frame for frame in frames if is_user_frame(frame.filename)] or frames[-1:]
    lines = []
    if kept:
        lines.append("Traceback (most recent call last):")
        if len(kept) > _MAX_FRAMES:
            lines.append(f"  … {len(kept) - _MAX_FRAMES} earlier frames")
            kept = kept[-_MAX_FRAMES:]
        for frame in kept:
            lines.extend(_frame_lines(frame))
    lines.extend(line.rstrip("\n") for line in traceback.format_exception_only(type(exception), exception))
    return lines


def format_failure(exception: BaseException) -> str:
    """The traceback of ``exception`` (and of its causes), trimmed to the user's frames."""
    chain: list[tuple[BaseException, str]] = []
    current: BaseException | None = exception
    seen: set[int] = set()
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        if current.__cause__ is not None:
            link, following = "The above exception was the direct cause of the following exception:", current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            link, following = "During handling of the above exception, another exception occurred:", current.__context__
        else:
            link, following = "", None
        chain.append((current, link))
        current = following
    parts: list[str] = []
    for failure, link in reversed(chain):
        if parts and link:
            parts.extend(["", link, ""])
        parts.extend(_one(failure))
    return "\n".join(parts)


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (a lone surrogate, as ``os.fsdecode`` makes of a stray
    byte) written as a backslash escape, so that it can be stored in SQLite, printed and shown."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text
