"""Stable fingerprints of an action's code and of the values a node reads and writes.

A fingerprint is a short hex digest that is the same in every process for the same
code or value, so a result stored by one run (or kernel) is found again by the next.

What counts:

* **code**: the action function's source, parsed so that comments and blank lines do
  not count (a docstring does), plus its default argument values and the values it
  closes over (a function made by a factory). Without source (a function built with
  ``exec`` and no line cache), its bytecode, constants (nested code objects included),
  names, defaults and closed-over values. A callable object: its class's source and its
  attributes. Only the source or bytecode part is remembered (per code object): defaults,
  closed-over values and attributes are read again each time, as they change in place.
  Module-level functions and modules the action calls, globals it reads and run inputs a
  ``ctx`` action reads itself are *not* part of it: edit a helper and the action's
  stored result is still reused (invalidate it, or mark the action ``cache=False``).
* **values**: ``None``, booleans, numbers, text, bytes and lists, tuples, dicts and
  sets of them canonically (dict key order does not count, ``1`` and ``1.0`` and
  ``True`` differ); numpy arrays by dtype, shape and bytes; pandas DataFrames, Series
  and indexes by ``pandas.util.hash_pandas_object`` plus index, columns, names and
  dtypes; anything else by its pickle bytes. A value none of these can read raises
  :class:`Unfingerprintable`.

>>> value_fingerprint({"b": [1, 2.0], "a": None}) == value_fingerprint({"a": None, "b": [1, 2.0]})
True
>>> value_fingerprint(1) == value_fingerprint(1.0)
False
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import inspect
import math
import struct
import sys
import textwrap
import types
import weakref
from collections.abc import Callable
from typing import Any

from dagger_nb.errors import DaggerError

#: values at least this big are hashed in a worker thread, not on the event loop
BIG_VALUE_BYTES = 1 << 20
_DIGEST_SIZE = 16


class Unfingerprintable(DaggerError):
    """A value (or a function) whose fingerprint cannot be computed; says why."""


def _hasher() -> Any:
    return hashlib.blake2b(digest_size=_DIGEST_SIZE)


def digest(*parts: str) -> str:
    """One fingerprint of several fingerprints (order counts)."""
    h = _hasher()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


# -- values ------------------------------------------------------------------------------------


def value_fingerprint(value: Any) -> str:
    """The fingerprint of ``value``; :class:`Unfingerprintable` saying why if it has none."""
    h = _hasher()
    try:
        _feed(h, value)
    except RecursionError:
        raise Unfingerprintable("it is nested too deeply") from None
    return h.hexdigest()


def is_big(value: Any) -> bool:
    """Whether hashing ``value`` is slow enough to belong in a worker thread."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes >= BIG_VALUE_BYTES
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.DataFrame | pd.Series):
        return int(value.memory_usage(index=True, deep=False).sum()) >= BIG_VALUE_BYTES
    if isinstance(value, bytes | str | list | dict | tuple | set):
        return len(value) >= BIG_VALUE_BYTES // 64
    return False


def _feed(h: Any, value: Any) -> None:
    kind = type(value)
    if value is None:
        h.update(b"N")
    elif kind is bool:
        h.update(b"T" if value else b"F")
    elif kind is int:
        text = str(value).encode()
        h.update(b"i" + struct.pack("<I", len(text)) + text)
    elif kind is float:
        h.update(b"f" + (b"nan" if math.isnan(value) else struct.pack("<d", value)))
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        h.update(b"s" + struct.pack("<Q", len(data)) + data)
    elif kind is bytes:
        h.update(b"b" + struct.pack("<Q", len(value)) + value)
    elif kind is list or kind is tuple:
        h.update((b"l" if kind is list else b"t") + struct.pack("<Q", len(value)))
        for item in value:
            _feed(h, item)
    elif kind is dict:
        h.update(b"d" + struct.pack("<Q", len(value)))
        for key_print, item in sorted(((value_fingerprint(k), v) for k, v in value.items()), key=_first):
            h.update(key_print.encode())
            _feed(h, item)
    elif kind is set or kind is frozenset:
        h.update(b"S" + struct.pack("<Q", len(value)))
        for item_print in sorted(value_fingerprint(item) for item in value):
            h.update(item_print.encode())
    elif not _feed_array_like(h, value):
        _feed_pickle(h, value)


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def _feed_array_like(h: Any, value: Any) -> bool:
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray) and value.dtype.kind not in "OV":
        h.update(b"A" + value.dtype.str.encode() + repr(value.shape).encode())
        h.update(memoryview(np.ascontiguousarray(value)).cast("B"))
        return True
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(value, pd.DataFrame | pd.Series | pd.Index):
        return False
    try:
        hashed = pd.util.hash_pandas_object(value, index=not isinstance(value, pd.Index))
    except (TypeError, ValueError):  # unhashable cells (lists, dicts): their pickle bytes count
        return False
    h.update(b"P" + type(value).__name__.encode())
    h.update(memoryview(hashed.to_numpy()).cast("B"))
    if isinstance(value, pd.DataFrame):
        _feed(h, [str(c) for c in value.columns])
        _feed(h, [str(t) for t in value.dtypes])
        _feed(h, [str(n) for n in value.columns.names])
    else:
        _feed(h, str(value.dtype))
        _feed(h, str(value.name))
    if not isinstance(value, pd.Index):
        _feed(h, str(value.index.dtype))
        _feed(h, [str(n) for n in value.index.names])
    return True


def _feed_pickle(h: Any, value: Any) -> None:
    import pickle  # only incremental runs fingerprint values

    try:
        data = pickle.dumps(value, protocol=5)
    except Exception as error:  # whatever a class's __reduce__ raises
        raise Unfingerprintable(f"{type(value).__name__} cannot be pickled ({type(error).__name__}: "
                                f"{str(error)[:120]})") from None
    h.update(b"p" + type(value).__qualname__.encode() + b"\0" + data)


# -- code --------------------------------------------------------------------------------------

# Only what cannot change without making a new code object (or class) is remembered: default
# values, closed-over values and an instance's attributes can change in place, so they are read
# on every fingerprint.
_code_prints: weakref.WeakKeyDictionary[types.CodeType, str] = weakref.WeakKeyDictionary()
_class_prints: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """The fingerprint of an action's code (see the module docstring for what counts).

    The source (or bytecode) part is remembered per code object; default values, closed-over
    values and a callable object's or bound method's instance state are read each time, so
    changing ``obj.factor`` or a dict a function closes over changes the fingerprint.
    """
    target: Any = fn
    parts: list[str] = []
    while isinstance(target, types.MethodType | functools.partial):
        if isinstance(target, types.MethodType):  # the instance's state counts, not its pickle
            owner = target.__self__
            parts.append(_instance_state(owner) if hasattr(owner, "__dict__") else value_fingerprint(owner))
            target = target.__func__
        else:
            parts.append(value_fingerprint((target.args, target.keywords)))
            target = target.func
    if isinstance(target, types.FunctionType):
        parts.append(_function_print(target))
    else:
        call = getattr(type(target), "__call__", None)  # noqa: B004 - callable objects
        if isinstance(call, types.FunctionType):
            parts += [_text_of_class(type(target)), _instance_state(target), _function_print(call)]
        else:  # a builtin: by its pickle, which names it
            parts.append(value_fingerprint(target))
    return digest(*parts)


def _function_print(fn: types.FunctionType) -> str:
    defaults = (fn.__defaults__, fn.__kwdefaults__)
    try:
        defaults_print = value_fingerprint(defaults)
    except Unfingerprintable as error:
        raise Unfingerprintable(f"a default argument value of '{fn.__qualname__}' has no fingerprint: {error}") \
            from None
    if fn.__closure__:  # a function made by a factory computes with the values it closed over
        try:
            closed = [cell.cell_contents for cell in fn.__closure__]
        except ValueError:  # an empty cell: a name assigned after the function was made
            closed = []
        try:
            defaults_print = digest(defaults_print, *(_closed_print(value) for value in closed))
        except Unfingerprintable as error:
            raise Unfingerprintable(f"a value '{fn.__qualname__}' closes over has no fingerprint: {error}") from None
    return digest(_static_print(fn), defaults_print)


def _static_print(fn: types.FunctionType) -> str:
    """The source (or bytecode) part of ``fn``'s fingerprint, remembered per code object."""
    code = fn.__code__
    with contextlib.suppress(KeyError):
        return _code_prints[code]
    source = _source(fn)
    result = digest("source", source) if source is not None else digest("code", _code_print(code))
    _code_prints[code] = result
    return result


def _closed_print(value: Any) -> str:
    if isinstance(value, types.FunctionType):  # a helper the factory closed over: its code counts
        return code_fingerprint(value)
    return value_fingerprint(value)


def _source(fn: types.FunctionType) -> str | None:
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError:  # a lambda's line with more around it: the text itself counts
        return text
    for node in ast.walk(tree):  # decorators say how it is registered, not what it computes
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == fn.__name__:
            node.decorator_list = []
            return ast.dump(node, annotate_fields=False)
    return ast.dump(tree, annotate_fields=False)


def _code_print(code: types.CodeType) -> str:
    h = _hasher()
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            h.update(_code_print(constant).encode())
        else:
            try:
                h.update(value_fingerprint(constant).encode())
            except Unfingerprintable:
                h.update(repr(constant).encode())
    return h.hexdigest()


def _text_of_class(cls: type) -> str:
    with contextlib.suppress(KeyError, TypeError):
        return _class_prints[cls]
    try:
        result = digest("class", textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        call = cls.__dict__.get("__call__")
        result = digest("class", cls.__qualname__, _code_print(call.__code__) if call else "")
    with contextlib.suppress(TypeError):
        _class_prints[cls] = result
    return result


def _instance_state(obj: Any) -> str:
    state = getattr(obj, "__dict__", None)
    return value_fingerprint(state) if state is not None else ""
