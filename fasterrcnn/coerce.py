"""Config values from files and command lines, checked and converted by the dataclasses' own
type hints: one rule for the model's config (`modeling.config`) and the training config
(`engine.config`).

`coerce(value, hint, name)` accepts what JSON, YAML and `--set KEY=VALUE` produce and returns
the field's type: lists become tuples where the field is a tuple (nested ones too), integers
become floats where the field is a float, a float with an integral value becomes an int where
the field is an int; a value of the wrong kind raises a ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union

from fasterrcnn.errors import ConfigError

__all__ = ["coerce", "field_hints"]


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_OF = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _describe(hint: Any, value: Any, in_union: bool = False) -> str:
    """What a field of type `hint` takes, in words (null left out: it is the unset value)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(c) for c in args)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _describe(options[0], value, in_union)
        return " or ".join(_describe(a, value, in_union=True) for a in options)
    if origin in (list, tuple):
        inner = _OF.get(args[0]) if args else None
        return f"a list of {inner}" if inner else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    if hint is int:  # "a number" unless the number itself was the problem (2.5), or beside a list
        return "an integer" if in_union or isinstance(value, float) else "a number"
    return {bool: "true or false", float: "a number", str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` converted to the type `hint`, or a ConfigError naming `name`."""
    try:
        return _coerce(value, hint, name)
    except _Mismatch:
        if value is None:
            raise ConfigError(f"{name} cannot be null") from None
        raise ConfigError(f"{name} must be {_describe(hint, value)}, got {value!r}") from None


class _Mismatch(Exception):
    pass


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in args:  # the first option that fits (None first where allowed)
            try:
                return _coerce(value, option, name)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], name) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise _Mismatch
            return tuple(_coerce(v, a, name) for v, a in zip(value, args))
        return [_coerce(v, args[0], name) for v in value] if args else list(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return value
    return _scalar(value, hint)


def _scalar(value: Any, hint: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if isinstance(value, bool):  # true/false is never a number
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)):
            return float(value)
        raise _Mismatch
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value
