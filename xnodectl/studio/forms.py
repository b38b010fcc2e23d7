"""A template's JSON Schema -> form fields, and a submitted form -> the CLI's key=value words.

The form is generated from `catalog.json_schema` (the same schema `templates show --json` prints);
values are checked by the CLI's own validator (`services.check_value`), never re-implemented here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from xnodectl.studio import services

Widget = Literal["select", "switch", "number", "text", "list", "secret"]


@dataclass(frozen=True)
class Field:
    name: str
    widget: Widget
    description: str
    required: bool
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    kind: str = "string"  # the xnode type (port, duration, eth_address, ...)

    @property
    def default_text(self) -> str:
        return word(self.default) if self.default is not None else ""


def word(value: object) -> str:
    """A value as the CLI's key=value word reads it back (bools lower case, lists comma-joined)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(word(v) for v in value)
    return str(value)


def _widget(prop: Mapping[str, Any]) -> Widget:
    if prop.get("x-xnode-secret"):
        return "secret"
    if "enum" in prop:
        return "select"
    kind = prop.get("type")
    if kind == "boolean":
        return "switch"
    if kind == "integer":
        return "number"
    if kind == "array":
        return "list"
    return "text"


def fields(schema: Mapping[str, Any]) -> list[Field]:
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema["properties"].items():
        scalar = prop.get("items", prop) if prop.get("type") == "array" else prop
        out.append(
            Field(
                name=name,
                widget=_widget(prop),
                description=prop.get("description", ""),
                required=name in required,
                default=prop.get("default"),
                choices=tuple(scalar.get("enum", ())),
                minimum=scalar.get("minimum"),
                maximum=scalar.get("maximum"),
                pattern=scalar.get("pattern"),
                kind=prop.get("x-xnode-type", "string"),
            )
        )
    return out


@dataclass
class Submission:
    """A template form as the CLI would be called: words, plus secrets kept apart."""

    words: list[str]
    values: dict[str, str]  # what the form shows back (never a secret)
    secrets: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    app_name: str | None = None


def read(t: services.Template, form: Mapping[str, str]) -> Submission:
    """Form fields -> `template=NAME k=v ...` (only values that differ from the default, as a
    person would type them) and per-field errors from the CLI's validator."""
    sub = Submission([f"template={t.name}"], {}, {})
    name = form.get("app_name", "").strip()
    sub.app_name = name or None
    for f in fields(services.schema(t)):
        if f.widget == "secret":
            if form.get(f.name):
                sub.secrets[f.name] = form[f.name]
            continue
        text = (
            ("true" if form.get(f.name) else "false")
            if f.widget == "switch"
            else form.get(f.name, "").strip()
        )
        sub.values[f.name] = text
        if text == f.default_text or (text == "" and not f.required):
            continue
        try:
            services.check_value(t, f.name, text)
        except services.XnodeError as exc:
            sub.errors[f.name] = exc.one_line()
        sub.words.append(f"{f.name}={text}")
    return sub


def initial(t: services.Template) -> dict[str, str]:
    """The form's first values: the defaults (required ones from the template's example)."""
    example = t.meta.example
    out = {}
    for f in fields(services.schema(t)):
        if f.widget == "secret":
            continue
        value = f.default if f.default is not None else example.get(f.name)
        out[f.name] = word(value) if value is not None else ""
    return out
