"""JSON Schema handling shared by task agents and pub/sub.

A schema is compiled once (:func:`compile_schema`) and then checks many
payloads (:meth:`CompiledSchema.validate`); the error names the failing path.

>>> schema = compile_schema({"type": "object", "required": ["topic"]}, where="channel 'news'")
>>> schema.validate({"topic": "ai"})
>>> schema.validate({})
Traceback (most recent call last):
...
dagger_nb.errors.SchemaValidationError: channel 'news': invalid payload at '$': 'topic' is a required property
"""

from __future__ import annotations

import json
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dagger_nb.errors import InvalidSchemaError, SchemaValidationError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator


class _BackgroundImport:
    """Imports jsonschema once, in a worker thread of its own.

    Importing jsonschema costs about a second of CPU (its format checkers build a
    grammar): ``import dagger_nb`` and the CLI should not pay it, and a kernel must
    not stall its event loop on it. The notebook extension starts the import when it
    loads, so by the time a cell registers a schema the module is there. The thread
    is not a daemon: an interpreter that exits mid-import waits for it rather than
    tearing down a half-imported module.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._module: ModuleType | None = None
        self._error: BaseException | None = None
        self.importing_thread: str | None = None  # name of the thread that ran the import

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="dagger-nb-import-jsonschema")
            try:
                self._thread.start()
            except RuntimeError:  # no new threads at interpreter shutdown: import right here
                self._run()

    def _run(self) -> None:
        self.importing_thread = threading.current_thread().name
        try:
            import jsonschema
            import jsonschema.exceptions
            import jsonschema.validators

            self._module = jsonschema
        except Exception as error:  # reported to every thread that waits for the module
            self._error = error
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        """True once the import has ended (succeeded or failed): waiting returns at once."""
        return self._done.is_set()

    def wait(self) -> ModuleType:
        """The jsonschema module, starting the import if needed and blocking until it ends."""
        if self._module is not None:
            return self._module
        self.start()
        self._done.wait()
        if self._module is None:
            raise ImportError(f"jsonschema failed to import: {self._error!r}") from self._error
        return self._module

    async def wait_async(self) -> ModuleType:
        """:meth:`wait` without blocking the event loop (waits in a worker thread)."""
        if not self.ready:
            import anyio.to_thread

            self.start()
            await anyio.to_thread.run_sync(self._done.wait)
        return self.wait()


_JSONSCHEMA = _BackgroundImport()


def preload_jsonschema() -> None:
    """Start importing jsonschema in a background thread, if not started yet; returns at once.

    The notebook extension calls this when it loads, so that the first schema a
    cell registers or a question form checks does not stall the kernel.
    """
    _JSONSCHEMA.start()


class CompiledSchema:
    """A checked JSON Schema with a ready validator; ``where`` prefixes its errors."""

    __slots__ = ("_validator", "schema", "where")

    def __init__(self, schema: dict[str, Any], validator: Validator, where: str) -> None:
        self.schema = schema
        self._validator = validator
        self.where = where

    def validate(self, payload: Any) -> None:
        """Raise :class:`SchemaValidationError` unless ``payload`` matches."""
        from jsonschema.exceptions import best_match

        error = best_match(self._validator.iter_errors(payload))
        if error is not None:
            raise SchemaValidationError(error.message, where=self.where, path=error.json_path)

    def is_valid(self, payload: Any) -> bool:
        """True when ``payload`` matches, without building an error."""
        return bool(self._validator.is_valid(payload))


def compile_schema(schema: dict[str, Any] | str | None, *, where: str) -> CompiledSchema | None:
    """Check ``schema`` (a dict or JSON text) and compile it; ``None`` passes through.

    Raises :class:`InvalidSchemaError` naming ``where`` when the schema is not
    valid JSON or not a valid JSON Schema. The first call waits for jsonschema's
    import (in its background thread): from a coroutine, use :func:`compile_schema_async`.
    """
    parsed = _parse(schema, where=where)
    return None if parsed is None else _compile(_JSONSCHEMA.wait(), parsed, where=where)


async def compile_schema_async(schema: dict[str, Any] | str | None, *, where: str) -> CompiledSchema | None:
    """:func:`compile_schema` for coroutines: waits for jsonschema's import off the event loop."""
    parsed = _parse(schema, where=where)
    return None if parsed is None else _compile(await _JSONSCHEMA.wait_async(), parsed, where=where)


def _parse(schema: dict[str, Any] | str | None, *, where: str) -> dict[str, Any] | None:
    if schema is None:
        return None
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise InvalidSchemaError(f"{where}: schema is not valid JSON: {error}") from None
    if not isinstance(schema, dict):
        raise InvalidSchemaError(f"{where}: schema must be a JSON object, got {type(schema).__name__}")
    return schema


def _compile(jsonschema: ModuleType, schema: dict[str, Any], *, where: str) -> CompiledSchema:
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.exceptions.SchemaError as error:
        raise InvalidSchemaError(f"{where}: invalid JSON Schema: {error.message}") from None
    return CompiledSchema(schema, validator_class(schema), where)
