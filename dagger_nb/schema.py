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
from typing import TYPE_CHECKING, Any

from dagger_nb.errors import InvalidSchemaError, SchemaValidationError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

# jsonschema is imported on first use: importing it costs over a second (its format
# checkers build a grammar), which `import dagger_nb` and the CLI should not pay.


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
    valid JSON or not a valid JSON Schema.
    """
    if schema is None:
        return None
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise InvalidSchemaError(f"{where}: schema is not valid JSON: {error}") from None
    if not isinstance(schema, dict):
        raise InvalidSchemaError(f"{where}: schema must be a JSON object, got {type(schema).__name__}")
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.exceptions.SchemaError as error:
        raise InvalidSchemaError(f"{where}: invalid JSON Schema: {error.message}") from None
    return CompiledSchema(schema, validator_class(schema), where)
