"""Reading the values magics take on their line (run inputs, mappings, answers), never with ``eval``.

A mapping is JSON, a Python literal (read with :func:`ast.literal_eval`) or the
name of a variable holding one; run inputs are also ``KEY=VALUE`` pairs whose
values are read as the command line reads them: JSON when it parses, else text.
"""

from __future__ import annotations

import ast
import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from IPython.core.error import UsageError

from dagger_nb.errors import describe_error


def inputs_usage(option: str) -> str:
    """How ``option`` is written, shown with every refused value."""
    return (
        f"{option} takes KEY=VALUE pairs or one mapping, for example\n"
        f"  {option} topic=bees rounds=3\n"
        f"  {option} \"{{'topic': 'bees', 'rounds': 3}}\"   (or JSON: '{{\"topic\": \"bees\"}}')\n"
        "VALUE is read as JSON when it parses, else as text; a bare NAME uses the mapping in that variable."
    )


def parse_inputs(
    tokens: Sequence[str] | None, *, option: str, namespace: Mapping[str, Any], line: str = ""
) -> dict[str, Any] | None:
    """The run inputs given as ``tokens`` (the words after ``option``), or None when not given.

    ``tokens`` come from IPython's splitting of the magic ``line``, which keeps quotes
    but splits at every space, even inside quotes: the words are joined again as
    the line has them.
    """
    if not tokens:
        return None
    text = rejoin(line, tokens)
    unquoted = unquote(text)
    if unquoted.startswith("{"):
        return parse_mapping(unquoted, option=option, namespace=namespace, usage=inputs_usage(option))
    if len(tokens) == 1 and unquoted.isidentifier():
        return parse_mapping(unquoted, option=option, namespace=namespace, usage=inputs_usage(option))
    try:
        words = shlex.split(text)  # as a shell reads `--input KEY=VALUE`: quotes group, then go
    except ValueError as error:
        raise UsageError(f"{option} {text}: {error}\n{inputs_usage(option)}") from None
    inputs: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{option}: '{word}' is not KEY=VALUE\n{inputs_usage(option)}")
        if key in inputs:
            raise UsageError(f"{option}: '{key}' is given twice\n{inputs_usage(option)}")
        inputs[key] = parse_value(value)
    return inputs


def rejoin(line: str, tokens: Sequence[str]) -> str:
    """``tokens`` joined by the whitespace between them in ``line`` (one space where that is unclear)."""
    parts: list[str] = []
    cursor, previous_end = 0, None
    for token in tokens:
        start = line.find(token, cursor)
        if start < 0:
            return " ".join(tokens).strip()
        gap = line[previous_end:start] if previous_end is not None else ""
        if parts:
            parts.append(gap if gap and not gap.strip() else " ")
        parts.append(token)
        cursor = previous_end = start + len(token)
    return "".join(parts).strip()


def parse_mapping(
    text: str, *, option: str, namespace: Mapping[str, Any], usage: str | None = None
) -> dict[str, Any]:
    """A mapping written as JSON, as a Python literal, or as the name of a variable holding one."""
    text = unquote(text)
    hint = f"\n{usage}" if usage else ""
    if text.isidentifier():
        if text not in namespace:
            raise UsageError(f"{option} {text}: no variable named '{text}' in the notebook{hint}")
        value = namespace[text]
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
                raise UsageError(
                    f"{option} {text}: not a mapping literal ({describe_error(error)}){hint}"
                ) from None
    if not isinstance(value, Mapping):
        raise UsageError(f"{option} must give a mapping (a dict), got {type(value).__name__}{hint}")
    if not all(isinstance(key, str) for key in value):
        raise UsageError(f"{option}: every key of the mapping must be text{hint}")
    return dict(value)


def parse_value(text: str) -> Any:
    """JSON when ``text`` parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def unquote(text: str) -> str:
    """``text`` without one pair of matching outer quotes."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text
