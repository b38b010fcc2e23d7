"""Help text a new user can read: metavars are words (NODE, PATH, N, [iso|qcow2|raw]), never
Python types (`<str>`, `<list[str]>`, `{directory}`), and choices are shown."""

from pathlib import Path
from typing import Any, get_args, get_origin

from typer.core import TyperArgument, TyperOption

_BY_TYPE = {int: "N", float: "SECONDS", Path: "PATH"}


class _Argument(TyperArgument):
    """An argument shown by its metavar alone, in the usage line and the Arguments list."""

    def display_type_rich(self, ctx: Any) -> str | None:  # noqa: ARG002 - typer's signature
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:  # noqa: ARG002 - click's signature
        name = (self.metavar or self.name or "").upper() + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]


def metavar(param: TyperOption | TyperArgument) -> str:
    described = param.type_descriptor
    if described.is_choice and described.choices:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in described.choices) + "]"
    item: Any = described.annotation
    if get_origin(item) is list:
        (item,) = get_args(item)
    longest = max(param.opts, key=len).lstrip("-") if isinstance(param, TyperOption) else None
    if longest is not None and item is int and longest.endswith("port"):
        return "PORT"
    if isinstance(param, TyperOption) and item in _BY_TYPE:
        return _BY_TYPE[item]
    return (longest or param.name or "value").replace("-", "_").upper()


def tidy(command: Any) -> Any:
    """Give every parameter of `command` a readable metavar (in place); returns `command`."""
    for param in getattr(command, "params", ()):
        if isinstance(param, TyperOption) and (param.is_flag or param.count):
            continue
        if not isinstance(param, TyperOption | TyperArgument) or param.metavar is not None:
            continue
        param.metavar = metavar(param)
        if type(param) is TyperArgument:
            param.__class__ = _Argument
    return command
