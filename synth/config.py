"""Dataclass configs from YAML recipes + command-line overrides.

A recipe maps 1:1 onto a (possibly nested) dataclass: ``pool: {num_problems: 8}`` sets
``cfg.pool.num_problems``. On the command line the same field is ``--pool.num_problems 8``.
Every field's help text comes from ``field(metadata={"help": ...})``.
Unknown keys, in a recipe or on the command line, are errors that name the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or override that does not fit the config."""


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp, key: str) -> Any:
    """Check/convert a YAML or CLI value to the field's type."""
    base = _strip_optional(tp)
    if value is None:
        return None
    if base is not tp and isinstance(value, str) and value.strip().lower() in ("null", "none", "~"):
        return None  # `--field null` on the command line for an optional field
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if base in (int, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return base(value)
        if base is str:
            return str(value)
        if origin is typing.Literal:
            if value not in typing.get_args(base):
                raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(base))}")
            return value
        if origin is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()] if not value.startswith("[") else yaml.safe_load(value)
            (inner,) = typing.get_args(base) or (Any,)
            return [_coerce(v, inner, key) for v in value]
        if origin is dict or base is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a dataclass from a nested dict; unknown keys are errors with suggestions."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields, hints = _fields(cls), _hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{name}'{hint}")
        tp = _strip_optional(hints[key])
        if _is_dataclass_type(tp):
            kwargs[key] = from_dict(tp, value or {}, prefix=f"{name}.")
        else:
            kwargs[key] = _coerce(value, hints[key], name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix or 'config'}: {err}") from None


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _walk(cls, prefix=""):
    """Yield (dotted name, type, field) for every leaf field."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = _strip_optional(hints[f.name])
        if _is_dataclass_type(tp):
            yield from _walk(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], f


def _default_repr(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "required"


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--dotted.name`` option per leaf field, with the field's help and default."""
    parser.add_argument("--config", help="YAML recipe; command-line options override its values")
    for name, tp, f in _walk(cls):
        base = _strip_optional(tp)
        choices = f" Choices: {', '.join(map(str, typing.get_args(base)))}." if typing.get_origin(base) is typing.Literal else ""
        helptext = f"{f.metadata.get('help', '')}{choices} (default: {_default_repr(f)})"
        many = {"nargs": "+"} if typing.get_origin(base) is list else {}  # `--runs a b c` as well as `--runs a,b,c`
        parser.add_argument(f"--{name}", dest=f"cfg:{name}", default=None, metavar=name.split(".")[-1].upper(), help=helptext, **many)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the recipe must be a mapping of config keys")
    return data


def build_config(cls: type[T], args: argparse.Namespace) -> T:
    """Recipe (if any) first, then every option given on the command line."""
    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    for key, value in vars(args).items():
        if key.startswith("cfg:") and value is not None:
            if isinstance(value, list):
                value = value[0] if len(value) == 1 else value
            _set_dotted(data, key[4:], yaml.safe_load(value) if isinstance(value, str) and value[:1] in "[{" else value)
    return from_dict(cls, data)


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(json.loads(json.dumps(to_dict(cfg))), sort_keys=False)
