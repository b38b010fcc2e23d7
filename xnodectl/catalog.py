"""The template catalogue: templates/<name>/template.toml -> typed, validated `Template`."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from xnodectl.errors import TemplateError, TemplateNotFound, did_you_mean
from xnodectl.params import PARAM_NAME, RESERVED_KEYS, ParamSpec, ParamType, coerce

MODULE_FILE = "module.nix.j2"
META_FILE = "template.toml"
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PortRef = int | Annotated[str, Field(pattern=r"^\{[a-z][a-z0-9_]*\}$")]


class PortMeta(_Strict):
    port: PortRef
    protocol: Literal["tcp", "udp", "both"] = "tcp"
    purpose: str
    public: bool = False
    # A bool parameter that makes this port public (opened in the firewall) when true.
    public_if: str | None = None
    # Prometheus metrics are served here: the monitoring template scrapes it automatically.
    metrics: bool = False
    metrics_path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._~/-]*$")
    # A bool parameter without which the port is not used at all (e.g. metrics = false).
    when: str | None = None


class ProbeMeta(_Strict):
    kind: Literal["systemd", "tcp", "http"]
    unit: str | None = None
    port: PortRef | None = None
    url: str | None = None
    status: int = 200
    timeout: int = Field(default=60, ge=1, le=3600)
    when: str | None = None  # a bool parameter that enables the probe

    @model_validator(mode="after")
    def _fields_for_kind(self) -> ProbeMeta:
        needed = {"systemd": "unit", "tcp": "port", "http": "url"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"a {self.kind} probe needs '{needed}'")
        return self


class RouteMeta(_Strict):
    path: str = Field(pattern=r"^/[A-Za-z0-9._~/-]*$")
    port: PortRef
    when: str | None = None  # a bool parameter that enables the route


class RequireMeta(_Strict):
    """Parameters that must be set (non-empty) when another parameter has a value."""

    when: str
    # Values of `when` that trigger the rule; without it, any true/non-empty value does.
    equals: list[str | int | bool] | None = None
    params: list[str] = Field(min_length=1)


class ResourceMeta(_Strict):
    min_ram_mb: int = Field(ge=0)
    min_disk_gb: int = Field(ge=0)
    min_cpus: int = Field(default=1, ge=1)


class TemplateMeta(_Strict):
    name: str = Field(pattern=_NAME.pattern)
    summary: str
    category: Literal[
        "blockchain", "storage", "ai", "database", "web", "monitoring", "dev", "security"
    ]
    description: str = ""
    parameters: dict[str, ParamSpec] = {}
    ports: list[PortMeta] = []
    health: list[ProbeMeta] = []
    users: list[str] = []
    routes: list[RouteMeta] = []
    requires: list[RequireMeta] = []
    resources: ResourceMeta
    example: dict[str, Any] = {}


@dataclass(frozen=True)
class Template:
    name: str
    meta: TemplateMeta
    directory: Path
    params: Mapping[str, ParamSpec]

    @property
    def module_source(self) -> Path:
        return self.directory / MODULE_FILE


def templates_root() -> Path:
    """The catalogue directory: $XNODECTL_TEMPLATES, the source checkout, or the installed copy."""
    if env := os.environ.get("XNODECTL_TEMPLATES"):
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "templates"):
        if candidate.is_dir():
            return candidate
    raise TemplateError(
        "the template catalogue was not found", hint="reinstall xnodectl or set XNODECTL_TEMPLATES"
    )


def _check_refs(meta: TemplateMeta, file: Path) -> None:
    """Placeholders must name parameters; public_if/when must name bool parameters."""

    def fail(field: str, msg: str) -> TemplateError:
        return TemplateError(f"{file}: {field}: {msg}", hint="fix the template metadata")

    flags: list[tuple[str, str | None]] = []
    texts: list[tuple[str, str]] = [(f"users[{i}]", user) for i, user in enumerate(meta.users)]
    for i, port in enumerate(meta.ports):
        texts.append((f"ports[{i}].port", str(port.port)))
        flags += [(f"ports[{i}].public_if", port.public_if), (f"ports[{i}].when", port.when)]
    for i, probe in enumerate(meta.health):
        flags.append((f"health[{i}].when", probe.when))
        for field in ("unit", "port", "url"):
            value = getattr(probe, field)
            if value is not None:
                texts.append((f"health[{i}].{field}", str(value)))
    for i, route in enumerate(meta.routes):
        texts.append((f"routes[{i}].port", str(route.port)))
        flags.append((f"routes[{i}].when", route.when))
    for i, rule in enumerate(meta.requires):
        for name in (rule.when, *rule.params):
            if name not in meta.parameters or meta.parameters[name].secret:
                raise fail(f"requires[{i}]", f"'{name}' is not a non-secret parameter")
    for field, flag in flags:
        if flag is not None and (
            flag not in meta.parameters or meta.parameters[flag].type is not ParamType.BOOL
        ):
            raise fail(field, f"'{flag}' is not a bool parameter")
    for field, text in texts:
        for ref in _PLACEHOLDER.findall(text):
            if ref not in meta.parameters:
                raise fail(field, f"'{{{ref}}}' names no parameter")


def _validate_defaults(meta: TemplateMeta, specs: Mapping[str, ParamSpec], file: Path) -> None:
    for name, spec in specs.items():
        if spec.secret:
            continue
        if spec.default is None and not spec.required:
            raise TemplateError(f"{file}: parameters.{name}: needs a default or required = true")
        try:
            if spec.default is not None:
                coerce(spec, spec.default)
            if name in meta.example:
                coerce(spec, meta.example[name])
        except TemplateError:
            raise
        except Exception as exc:
            raise TemplateError(
                f"{file}: parameters.{name}: bad default or example: {exc}"
            ) from exc
    for name in meta.example:
        if name not in specs or specs[name].secret:
            raise TemplateError(f"{file}: example.{name}: not a non-secret parameter")


def load_template_dir(directory: Path) -> Template:
    file = directory / META_FILE
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError as exc:
        raise TemplateError(f"{file}: missing", hint="every template needs template.toml") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{file}: not valid TOML: {exc}") from exc
    try:
        meta = TemplateMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise TemplateError(
            f"{file}: {where}: {first['msg']}",
            hint=f"{exc.error_count()} problem(s) in the metadata",
        ) from exc
    if meta.name != directory.name:
        raise TemplateError(f"{file}: name: '{meta.name}' differs from its directory name")
    if not (directory / MODULE_FILE).is_file():
        raise TemplateError(f"{directory / MODULE_FILE}: missing")
    for name, spec in meta.parameters.items():
        if spec.name:
            raise TemplateError(
                f"{file}: parameters.{name}.name: extra field", hint="a parameter's name is its key"
            )
        if name in RESERVED_KEYS or not PARAM_NAME.match(name):
            raise TemplateError(
                f"{file}: parameters.{name}: not a usable parameter name",
                hint="lowercase letters, digits and '_'; 'template' and 'name' are reserved",
            )
    specs = {name: p.model_copy(update={"name": name}) for name, p in meta.parameters.items()}
    _check_refs(meta, file)
    _validate_defaults(meta, specs, file)
    return Template(name=meta.name, meta=meta, directory=directory, params=specs)


def names(root: Path | None = None) -> list[str]:
    root = root or templates_root()
    return sorted(p.name for p in root.iterdir() if (p / META_FILE).is_file())


@cache
def _load(root: Path, name: str) -> Template:
    return load_template_dir(root / name)


def get(name: str, root: Path | None = None) -> Template:
    root = root or templates_root()
    known = names(root)
    if name not in known:
        raise TemplateNotFound(f"unknown template '{name}'", hint=did_you_mean(name, known))
    return _load(root, name)


def all_templates(root: Path | None = None) -> list[Template]:
    root = root or templates_root()
    return [_load(root, n) for n in names(root)]


def substitute(text: str, values: Mapping[str, Any]) -> str:
    """Fill `{param}` placeholders in probe/port/route fields with validated values."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


_JSON_TYPES: dict[ParamType, dict[str, Any]] = {
    ParamType.STRING: {"type": "string"},
    ParamType.INT: {"type": "integer"},
    ParamType.BOOL: {"type": "boolean"},
    ParamType.ENUM: {"type": "string"},
    ParamType.PORT: {"type": "integer", "minimum": 1, "maximum": 65535},
    ParamType.PATH: {"type": "string", "pattern": "^/"},
    ParamType.ETH_ADDRESS: {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"},
    ParamType.URL: {"type": "string", "format": "uri"},
    ParamType.DURATION: {"type": "string", "pattern": r"^\d+(s|m|h|d|w)$"},
}


def _json_scalar(spec: ParamSpec, kind: ParamType) -> dict[str, Any]:
    schema = dict(_JSON_TYPES[kind])
    if kind is ParamType.ENUM:
        schema["enum"] = list(spec.choices)
    if spec.minimum is not None and kind in (ParamType.INT, ParamType.PORT):
        schema["minimum"] = spec.minimum
    if spec.maximum is not None and kind in (ParamType.INT, ParamType.PORT):
        schema["maximum"] = spec.maximum
    if spec.pattern and kind in (ParamType.STRING, ParamType.URL):
        schema["pattern"] = spec.pattern
    return schema


def json_schema(template: Template) -> dict[str, Any]:
    """The parameters as a JSON Schema (draft 2020-12)."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in template.params.items():
        if spec.type is ParamType.LIST:
            assert spec.items is not None
            schema: dict[str, Any] = {"type": "array", "items": _json_scalar(spec, spec.items)}
        else:
            schema = _json_scalar(spec, spec.type)
        schema["description"] = spec.description
        schema["x-xnode-type"] = spec.type.value
        if spec.secret:
            schema["x-xnode-secret"] = True
            schema["writeOnly"] = True
        elif spec.default is not None:
            schema["default"] = spec.default
        if spec.required and not spec.secret:
            required.append(name)
        props[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": template.name,
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }
