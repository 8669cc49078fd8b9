"""Forms for the questions a run asks a person (``await ctx.ask_human(...)``), built from their schema.

A simple schema gets a matching input: ``string`` → Text, ``number`` → FloatText,
``integer`` → IntText, ``boolean`` → Checkbox, ``enum`` → Dropdown, an ``object``
whose properties are all simple → one field per property. Anything else (or no
schema) gets a Textarea whose text is parsed as JSON (without a schema, text that
is not JSON is taken as it is).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any

import ipywidgets as widgets

from dagger_nb.dag.human import HumanRequest
from dagger_nb.errors import DaggerError

_SIMPLE = {"string", "number", "integer", "boolean"}


def _simple(schema: Any) -> bool:
    return isinstance(schema, dict) and ("enum" in schema or schema.get("type") in _SIMPLE)


def _field(schema: dict[str, Any], default: Any, description: str = "") -> widgets.ValueWidget:
    """The input widget for one simple schema, showing ``default`` when it fits."""
    options = {"description": description, "style": {"description_width": "initial"}}
    if "enum" in schema:
        choices = [(value if isinstance(value, str) else json.dumps(value), value) for value in schema["enum"]]
        value = default if default in schema["enum"] else schema["enum"][0] if schema["enum"] else None
        return widgets.Dropdown(options=choices, value=value, **options)
    kind = schema["type"]
    if kind == "boolean":
        return widgets.Checkbox(value=bool(default), indent=False, **options)
    if kind == "integer":
        return widgets.IntText(value=default if isinstance(default, int) else 0, **options)
    if kind == "number":
        return widgets.FloatText(value=default if isinstance(default, int | float) else 0.0, **options)
    return widgets.Text(value=default if isinstance(default, str) else "", **options)


class QuestionForm(widgets.VBox):
    """One open question: its prompt, an input made from its schema, Submit, and the last refusal."""

    def __init__(self, request: HumanRequest, respond: Callable[[str, Any], None]) -> None:
        self.request = request
        self._respond = respond
        schema = request.schema
        self.prompt = widgets.HTML(
            f"<b>{escape(request.node)}</b> asks: {escape(request.prompt)}"
            f" <code>{escape(request.request_id)}</code>"
        )
        #: The inputs, by property name ("" for a single value); empty when the answer is JSON text.
        self.fields: dict[str, widgets.ValueWidget] = {}
        self.textarea: widgets.Textarea | None = None
        properties = schema.get("properties") if isinstance(schema, dict) else None
        if _simple(schema):
            assert isinstance(schema, dict)
            self.fields[""] = _field(schema, request.default)
        elif (
            isinstance(schema, dict) and schema.get("type") == "object" and isinstance(properties, dict)
            and properties and all(_simple(s) for s in properties.values())
        ):
            defaults = request.default if isinstance(request.default, dict) else {}
            for name, sub in properties.items():
                self.fields[name] = _field(sub, defaults.get(name), description=name)
        else:
            text = "" if request.default is None else json.dumps(request.default)
            self.textarea = widgets.Textarea(value=text, placeholder="an answer as JSON",
                                             layout=widgets.Layout(width="100%"))
        self.submit = widgets.Button(description="Submit", button_style="primary", icon="check")
        self.submit.add_class("dagger-submit")
        self.submit.on_click(lambda _button: self.send())
        #: The reason the last answer was refused (escaped HTML), empty when none was.
        self.message = widgets.HTML()
        self.message.add_class("dagger-question-error")
        inputs: list[Any] = list(self.fields.values()) if self.textarea is None else [self.textarea]
        super().__init__(children=[self.prompt, *inputs, widgets.HBox([self.submit, self.message])])
        self.add_class("dagger-question")

    def value(self) -> Any:
        """The answer the inputs hold now (``ValueError`` for a Textarea that is not JSON)."""
        if self.textarea is not None:
            try:
                return json.loads(self.textarea.value)
            except json.JSONDecodeError as error:
                if self.request.schema is None:
                    return self.textarea.value
                raise ValueError(f"the answer is not valid JSON: {error}") from None
        if "" in self.fields:
            return self.fields[""].value
        return {name: field.value for name, field in self.fields.items()}

    def send(self) -> bool:
        """Submit the answer; a refusal is shown next to the form. True when it was accepted."""
        try:
            self._respond(self.request.request_id, self.value())
        except (DaggerError, ValueError) as error:
            self.message.value = f'<span style="color:#b00">{escape(str(error))}</span>'
            return False
        self.message.value = "answered"
        self.submit.disabled = True
        return True

    def widgets(self) -> list[widgets.Widget]:
        """Every widget of the form (to re-send or close them)."""
        inputs: list[widgets.Widget] = list(self.fields.values())
        if self.textarea is not None:
            inputs.append(self.textarea)
        return [self.prompt, *inputs, self.submit, self.message]


class QuestionsPanel(widgets.VBox):
    """The open questions of a run, one :class:`QuestionForm` each, kept in step by :meth:`sync`."""

    def __init__(self, respond: Callable[[str, Any], None]) -> None:
        self._respond = respond
        #: The forms shown, by request id.
        self.forms: dict[str, QuestionForm] = {}
        super().__init__(layout=widgets.Layout(width="100%"))
        self.add_class("dagger-questions")

    def sync(self, requests: list[HumanRequest]) -> None:
        """Show a form for each of ``requests`` (keeping the ones already shown), drop the others."""
        open_ids = [request.request_id for request in requests]
        if open_ids == list(self.forms):
            return
        for request_id in [rid for rid in self.forms if rid not in open_ids]:
            self.forms.pop(request_id).close()
        for request in requests:
            if request.request_id not in self.forms:
                self.forms[request.request_id] = QuestionForm(request, self._respond)
        self.children = list(self.forms.values())
