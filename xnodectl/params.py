"""Typed template parameters: `key=value` words and TOML values -> validated Python values."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from xnodectl.errors import ParamError, UsageError, did_you_mean

RESERVED_KEYS = frozenset({"template", "name"})
PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # what a key=value word can name
_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
SECRET_ROOT = "/var/lib/xnode/secrets"


class ParamType(StrEnum):
    STRING = "string"
    INT = "int"
    BOOL = "bool"
    ENUM = "enum"
    PORT = "port"
    PATH = "path"
    ETH_ADDRESS = "eth_address"
    URL = "url"
    DURATION = "duration"
    LIST = "list"


class ParamSpec(BaseModel):
    """One parameter of a template: its entry under [parameters.<name>] in template.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: ParamType
    description: str = ""
    default: Any = None
    required: bool = False
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = Field(default=None, alias="min")
    maximum: int | None = Field(default=None, alias="max")
    pattern: str | None = None
    items: ParamType | None = None
    max_length: int | None = None
    # url/path/eth_address/string: the empty string is allowed and means "not set".
    allow_empty: bool = False
    # For secret parameters: who may read the file on the node (default root only).
    owner: str = "root"
    group: str = "root"
    # The key of its [parameters.<name>] table, set by the catalogue (not written in the file).
    name: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type is ParamType.ENUM and not self.choices:
            raise ValueError("an enum parameter needs 'choices'")
        if self.type is ParamType.LIST and self.items in (None, ParamType.LIST):
            raise ValueError("a list parameter needs 'items' naming a scalar type")
        if self.pattern is not None:
            re.compile(self.pattern)
        return self


def split_words(words: Sequence[str]) -> dict[str, str]:
    """`key=value` words -> mapping; a malformed or repeated word is a usage error."""
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(
                f"'{word}' is not a key=value word",
                hint="give parameters as key=value, e.g. template=ethereum-node network=sepolia",
            )
        if not PARAM_NAME.match(key):
            raise UsageError(
                f"'{key}' is not a valid parameter name",
                hint="names are lowercase letters, digits and underscores",
            )
        if key in out:
            raise UsageError(f"parameter '{key}' is given twice", hint="give each key once")
        out[key] = value
    return out


def eip55_checksum(address: str) -> str:
    """The EIP-55 mixed-case form of a 0x address (eth_utils, imported lazily)."""
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(address.lower()))


def check_address(text: str, what: str = "value") -> str:
    """Validate an Ethereum address; mixed case must carry a valid EIP-55 checksum."""
    if not _ADDRESS.match(text):
        raise ParamError(
            f"{what} '{text}' is not an Ethereum address",
            hint="expected 0x followed by 40 hex digits",
        )
    body = text[2:]
    checksummed = eip55_checksum(text)
    if body != body.lower() and body != body.upper() and text != checksummed:
        raise ParamError(
            f"{what} '{text}' has a wrong EIP-55 checksum (a typo?)",
            hint=f"the checksummed form of this address would be {checksummed}",
        )
    return checksummed


def duration_seconds(text: str) -> int:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _bound(value: int | None) -> str:
    return "..." if value is None else str(value)


_EXAMPLES = {
    ParamType.STRING: "text",
    ParamType.INT: "10",
    ParamType.BOOL: "true",
    ParamType.PORT: "8080",
    ParamType.PATH: "/var/lib/data",
    ParamType.ETH_ADDRESS: "0x" + "0" * 40,
    ParamType.URL: "https://example.org",
    ParamType.DURATION: "30s",
}


def as_word(value: object) -> str:
    """A value as the key=value word the CLI reads back (true, 8545, eth,net)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(as_word(v) for v in value)
    return str(value)


def example_word(spec: ParamSpec) -> str:
    """`name=value` the way this parameter is typed: its default when it has one."""
    if spec.default not in (None, "", []):
        return f"{spec.name}={as_word(spec.default)}"
    if spec.choices:
        return f"{spec.name}={spec.choices[0]}"
    item = _EXAMPLES.get(spec.items or spec.type, "value")
    return f"{spec.name}={item},{item}" if spec.type is ParamType.LIST else f"{spec.name}={item}"


def _fail(spec: ParamSpec, value: object, expected: str) -> ParamError:
    return ParamError(
        f"parameter '{spec.name}' got {value!r}, expected {expected}",
        hint=f"type it like {example_word(spec)}",
    )


def _scalar(spec: ParamSpec, kind: ParamType, value: object) -> Any:
    if spec.allow_empty and value == "":
        return ""
    return _typed(spec, kind, value)


def _typed(spec: ParamSpec, kind: ParamType, value: object) -> Any:
    from_cli = isinstance(value, str)
    match kind:
        case ParamType.STRING:
            if not isinstance(value, str):
                raise _fail(spec, value, "a string")
            if "\x00" in value:
                raise _fail(spec, value, "text without NUL bytes")
            if spec.pattern and not re.fullmatch(spec.pattern, value):
                raise _fail(spec, value, f"text matching {spec.pattern}")
            if spec.max_length is not None and len(value) > spec.max_length:
                raise _fail(spec, value, f"at most {spec.max_length} characters")
            return value
        case ParamType.INT | ParamType.PORT:
            if from_cli:
                assert isinstance(value, str)
                if not re.fullmatch(r"-?\d+", value.strip()):
                    raise _fail(spec, value, "a whole number")
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(spec, value, "a whole number")
            low = (
                spec.minimum
                if spec.minimum is not None
                else (1 if kind is ParamType.PORT else None)
            )
            high = (
                spec.maximum
                if spec.maximum is not None
                else (65535 if kind is ParamType.PORT else None)
            )
            if (low is not None and value < low) or (high is not None and value > high):
                raise ParamError(
                    f"parameter '{spec.name}' is {value}, out of range",
                    hint=f"allowed: {_bound(low)} to {_bound(high)}",
                )
            return value
        case ParamType.BOOL:
            if isinstance(value, bool):
                return value
            if from_cli and str(value).lower() in {"true", "yes", "on", "1"}:
                return True
            if from_cli and str(value).lower() in {"false", "no", "off", "0"}:
                return False
            raise _fail(spec, value, "true or false")
        case ParamType.ENUM:
            if value not in spec.choices:
                raise ParamError(
                    f"parameter '{spec.name}' got {value!r}",
                    hint="allowed values: " + ", ".join(spec.choices),
                )
            return value
        case ParamType.PATH:
            if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
                raise _fail(spec, value, "an absolute path")
            if any(part == ".." for part in value.split("/")):
                raise _fail(spec, value, "a path without '..'")
            return value
        case ParamType.ETH_ADDRESS:
            if not isinstance(value, str):
                raise _fail(spec, value, "an Ethereum address")
            return check_address(value, f"parameter '{spec.name}'")
        case ParamType.URL:
            if not isinstance(value, str):
                raise _fail(spec, value, "a URL")
            parts = urlsplit(value)
            if (
                parts.scheme not in {"http", "https", "ws", "wss"}
                or not parts.hostname
                or any(ch.isspace() for ch in value)
            ):
                raise _fail(spec, value, "an http(s):// or ws(s):// URL with a host")
            if spec.pattern and not re.fullmatch(spec.pattern, value):
                raise _fail(spec, value, f"a URL matching {spec.pattern}")
            return value
        case ParamType.DURATION:
            if not isinstance(value, str) or not _DURATION.match(value):
                raise _fail(spec, value, "a duration such as 30s, 5m, 12h, 7d or 2w")
            seconds = duration_seconds(value)
            if (spec.minimum is not None and seconds < spec.minimum) or (
                spec.maximum is not None and seconds > spec.maximum
            ):
                raise ParamError(
                    f"parameter '{spec.name}' is {value}, out of range",
                    hint=f"allowed: {spec.minimum} s to {spec.maximum} s",
                )
            return value
        case ParamType.LIST:
            raise AssertionError("lists are handled by coerce")
    raise AssertionError(kind)


def coerce(spec: ParamSpec, value: object) -> Any:
    """Validate one value (a CLI string or a TOML value) against its spec."""
    if spec.type is ParamType.LIST:
        assert spec.items is not None
        if isinstance(value, str):
            items: list[object] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list):
            items = list(value)
        else:
            raise _fail(spec, value, "a comma-separated list")
        if spec.max_length is not None and len(items) > spec.max_length:
            raise _fail(spec, value, f"at most {spec.max_length} items")
        return [_scalar(spec, spec.items, item) for item in items]
    return _scalar(spec, spec.type, value)


def secret_path(instance: str, name: str) -> str:
    """Where a secret parameter's file lives on the node: root-only, outside the Nix store."""
    return f"{SECRET_ROOT}/{instance}/{name}"


def resolve(
    specs: Mapping[str, ParamSpec], given: Mapping[str, object], template: str
) -> dict[str, Any]:
    """Given values -> the full validated parameter set (defaults filled in).

    Secret parameters take no value here: they are files delivered at deploy time.
    """
    for key in given:
        if key not in specs:
            raise ParamError(
                f"template '{template}' has no parameter '{key}'",
                hint=did_you_mean(key, specs),
            )
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if spec.secret:
            if name in given:
                raise ParamError(
                    f"parameter '{name}' is a secret and cannot be given on the command line",
                    hint="secrets are read at deploy time from the workspace's secrets/<app>/"
                    f"{name} file or the XNODE_SECRET_<APP>_{name.upper()} environment variable",
                )
            continue
        if name in given:
            values[name] = coerce(spec, given[name])
        elif spec.required:
            raise ParamError(
                f"template '{template}' needs parameter '{name}'",
                hint=f"add {name}=... ({spec.description})"
                if spec.description
                else f"add {name}=...",
            )
        else:
            values[name] = spec.default
    return values
