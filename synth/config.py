"""Dataclass configs from YAML recipes + command-line overrides.

A recipe maps 1:1 onto a (possibly nested) dataclass: ``pool: {num_problems: 8}`` sets
``cfg.pool.num_problems``; on the command line the same field is ``--pool.num_problems 8``
(``--pool-num-problems 8`` too: dashes, dots and underscores alike), a bare ``--flag`` sets a boolean
and ``--no_flag`` clears it. A dict on the command line is merged into the recipe's dict. A
``dict[str, Section]`` field holds named sections (``eval_pools: {ood: {seed: 5}}``).

Field metadata:
- ``help``: the option's help text;
- ``range``: an interval such as ``"[1, inf)"`` or ``"(0, 1]"``, checked by `check_fields`;
- ``passthrough``: ``"module:Class"`` of a dataclass (TRL's ``SFTConfig``, transformers'
  ``TrainingArguments``) whose fields this section also takes, collected in that dict field and written
  back flat, so a section reads like the library's own config.
A class attribute ``RENAMED = {old: new}`` keeps old key names working, with a deprecation warning.
Unknown keys, in a recipe or on the command line, are one-line errors that name the key and the closest one.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import logging
import math
import re
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A recipe or override that does not fit the config."""


class FieldError(ConfigError):
    """A bad value of one field; `from_dict` prefixes the message with the field's section."""


# ---------------------------------------------------------------- fields and types


@cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _passthrough(cls) -> tuple[str, type] | None:
    """(field name, target dataclass) of a section that passes a library config's fields through."""
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("passthrough")
        if spec:
            module, _, name = spec.partition(":")
            return f.name, getattr(importlib.import_module(module), name)
    return None


def _passthrough_name(cls) -> str | None:
    """The passthrough field's name, without importing its target."""
    return next((f.name for f in dataclasses.fields(cls) if f.metadata.get("passthrough")), None)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp, key: str) -> Any:
    """Check/convert a YAML or CLI value to the field's type; errors name the key."""
    base = _strip_optional(tp)
    if value is None:
        if base is not tp or tp is Any:
            return None
        raise FieldError(f"{key} must not be null")
    if base is not tp and isinstance(value, str) and value.strip().lower() in ("null", "none", "~"):
        return None  # `--field null` on the command line for an optional field
    origin = typing.get_origin(base)

    def bad(what: str | None = None) -> FieldError:
        return FieldError(f"{key}: cannot read {value!r} as {what or _type_name(base)}")

    if base is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise bad("a boolean (true or false)")
    if base is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise FieldError(f"{key} must be a whole number, got {value!r}")
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d*\.\d+(e[-+]?\d+)?\s*", value, re.I):
            raise FieldError(f"{key} must be a whole number, got {value!r}")
        raise bad("an integer")
    if base is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(number):
            raise FieldError(f"{key} must be a finite number, got {value!r}")
        return number
    if base is str:
        if isinstance(value, (dict, list)):
            raise bad("a string")
        return str(value)
    if origin is typing.Literal:
        choices = typing.get_args(base)
        if value not in choices:
            raise FieldError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad("a list")
        (inner,) = typing.get_args(base) or (Any,)
        return [_coerce(v, inner, key) for v in value]
    if origin is dict or base is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        inner = (typing.get_args(base) or (str, Any))[1]
        if _is_dataclass_type(inner):  # named sections, e.g. eval_pools: {ood: {...}}
            return {str(k): from_dict(inner, v or {}, prefix=f"{key}.{k}.") for k, v in value.items()}
        return dict(value)
    return value


_INTERVAL = re.compile(r"([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])")


@cache
def _interval(spec: str) -> tuple[float, float, bool, bool]:
    m = _INTERVAL.fullmatch(spec.strip())
    if not m:
        raise ValueError(f"bad range spec {spec!r}")
    return float(m.group(2)), float(m.group(3)), m.group(1) == "[", m.group(4) == "]"


def range_text(spec: str) -> str:
    lo, hi, lo_closed, hi_closed = _interval(spec)
    if math.isinf(hi):
        return f"{'>=' if lo_closed else '>'} {lo:g}"
    return spec


def check_fields(obj) -> None:
    """Check every field with a `range`, and every Literal field's value (None skips an optional field
    left unset): the same checks whether a config comes from a recipe or is built in code."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        spec = f.metadata.get("range")
        value = getattr(obj, f.name)
        base = _strip_optional(hints[f.name])
        if typing.get_origin(base) is typing.Literal and value is not None and value not in typing.get_args(base):
            raise FieldError(f"{f.name}: {value!r} is not one of {list(typing.get_args(base))}")
        if not spec or value is None or isinstance(value, bool):
            continue
        lo, hi, lo_closed, hi_closed = _interval(spec)
        ok = (value >= lo if lo_closed else value > lo) and (value <= hi if hi_closed else value < hi)
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            text = range_text(spec)
            raise FieldError(f"{f.name} must be {text if text[0] in '<>' else 'in ' + text}, got {value!r}")


# ---------------------------------------------------------------- dicts <-> dataclasses


def _renamed(cls, key: str, prefix: str) -> str:
    new = getattr(cls, "RENAMED", {}).get(key)
    if new is None:
        return key
    _warn_once(f"config key '{prefix}{key}' is deprecated: use '{prefix}{new}' (the old name goes in the next release)")
    return new


@cache
def _warn_once(message: str) -> None:
    log.warning(message)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a dataclass from a nested dict; unknown keys are errors with suggestions."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    upgrade = getattr(cls, "upgrade", None)
    data = upgrade(dict(data), prefix) if upgrade else data
    fields, hints = _fields(cls), _hints(cls)
    through_name = _passthrough_name(cls)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = _renamed(cls, str(raw_key), prefix)
        name = f"{prefix}{key}"
        if key == through_name:
            raise ConfigError(
                f"'{name}' is not a key of its own: give its fields directly in '{prefix.rstrip('.') or 'the recipe'}'"
            )
        if key not in fields:
            through = _passthrough(cls) if through_name else None
            if through is not None and key in _fields(through[1]):
                extra[key] = _coerce_foreign(value, through[1], key, name)
                continue
            candidates = [k for k in fields if k != through_name] + (list(_fields(through[1])) if through else [])
            close = difflib.get_close_matches(key, candidates, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            also = (
                f"; it also takes any field of {through[1].__module__.split('.')[0]}.{through[1].__name__}"
                if through
                else ""
            )
            raise ConfigError(f"unknown config key '{name}'{hint}{also}")
        tp = _strip_optional(hints[key])
        if _is_dataclass_type(tp):
            if value is None and tp is not hints[key]:
                kwargs[key] = None
                continue
            kwargs[key] = from_dict(tp, value or {}, prefix=f"{name}.")
        else:
            kwargs[key] = _coerce(value, hints[key], name)
    if through_name:
        default = _fields(cls)[through_name]
        base = default.default_factory() if default.default_factory is not dataclasses.MISSING else {}
        kwargs[through_name] = {**base, **extra}
    try:
        return cls(**kwargs)
    except FieldError as err:
        raise FieldError(f"{prefix}{err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') + ': ' if prefix else ''}{err}") from None


def _coerce_foreign(value: Any, target: type, key: str, name: str) -> Any:
    """A passthrough value, converted where the library's field has a plain type."""
    try:
        tp = typing.get_type_hints(target).get(key)
    except Exception:  # noqa: BLE001 - a library's forward references we cannot resolve: take the value as is
        return value
    base = _strip_optional(tp)
    if base in (bool, int, float, str):
        return _coerce(value, tp, name)
    return value


def to_dict(cfg) -> dict[str, Any]:
    """Plain nested dict of a config; a passthrough dict is written flat into its section."""
    out: dict[str, Any] = {}
    through = _passthrough_name(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == through:
            out.update(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = to_dict(value)
        elif isinstance(value, dict) and any(dataclasses.is_dataclass(v) for v in value.values()):
            out[f.name] = {k: to_dict(v) for k, v in value.items()}
        else:
            out[f.name] = json.loads(json.dumps(value, default=str))
    return out


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"--config {path}: not a file (give a YAML recipe, e.g. configs/quickstart.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {_first_line(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the recipe must be a mapping of config keys")
    return data


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


# ---------------------------------------------------------------- the command line


@dataclasses.dataclass
class Option:
    name: str  # dotted: search.n
    type: Any
    field: dataclasses.Field
    section: str  # "" for top-level fields


def options(cls, prefix: str = "") -> list[Option]:
    """Every leaf field of a config as a dotted option, nested sections included."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = _strip_optional(hints[f.name])
        if _is_dataclass_type(tp):
            out += options(tp, f"{prefix}{f.name}.")
        elif not f.metadata.get("passthrough"):
            out.append(Option(f"{prefix}{f.name}", hints[f.name], f, prefix.rstrip(".")))
    return out


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]", "_", name.lower())


def _sections(cls, prefix: str = "") -> dict[str, type]:
    """Dotted section name -> its dataclass ("" for the top level)."""
    out = {prefix.rstrip("."): cls}
    for f in dataclasses.fields(cls):
        tp = _strip_optional(_hints(cls)[f.name])
        if _is_dataclass_type(tp):
            out.update(_sections(tp, f"{prefix}{f.name}."))
    return out


def _resolve_option(cls, raw: str, known: dict[str, Option]) -> tuple[str, Option | None]:
    """The dotted key an option names and its Option; None for a renamed key or a library's field
    (passthrough), which `from_dict` resolves."""
    if raw in known:
        return raw, known[raw]
    by_canon = {_canonical(k): k for k in known}
    if _canonical(raw) in by_canon:
        key = by_canon[_canonical(raw)]
        return key, known[key]
    section, _, key = raw.rpartition(".")
    key = key.replace("-", "_")
    sub = _sections(cls).get(section.replace("-", "_"))
    if sub is not None:
        through = _passthrough(sub) if _passthrough_name(sub) else None
        if key in getattr(sub, "RENAMED", {}) or (through and key in _fields(through[1])):
            return f"{section}.{key}" if section else key, None
    close = difflib.get_close_matches(_canonical(raw), list(by_canon), n=1)
    hint = f" (did you mean '--{by_canon[close[0]]}'?)" if close else ""
    raise ConfigError(f"unknown option '--{raw}'{hint}; --help lists them")


def _negated(raw: str) -> str | None:
    """'no_resume' -> 'resume', 'search.no-filter_duplicates' -> 'search.filter_duplicates'; else None."""
    section, dot, key = raw.rpartition(".")
    if key[:3] in ("no_", "no-") and len(key) > 3:
        return f"{section}{dot}{key[3:]}"
    return None


def _parse_value(text: str, opt: Option | None, key: str) -> Any:
    """A command-line value: YAML for mappings and lists ('[a, b]', '{k: v}'), the text otherwise."""
    if text[:1] in "[{":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--{key}: not valid YAML: {_first_line(err)}") from None
    if opt is None:  # a library's field: let YAML type it (numbers, booleans)
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def parse_cli(cls: type[T], argv: list[str]) -> T:
    """`--config recipe.yaml` first, then every option given, into a config of `cls`."""
    known = {o.name: o for o in options(cls)}
    recipe: str | None = None
    overrides: list[tuple[str, Any]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}: options look like --name value")
        raw, eq, inline = token[2:].partition("=")
        values = [inline] if eq else []
        j = i + 1
        while not eq and j < len(argv) and not (argv[j].startswith("--") and len(argv[j]) > 2):
            values.append(argv[j])
            j += 1
        i = j
        if _canonical(raw) == "config":
            if len(values) != 1:
                raise ConfigError("--config takes one YAML recipe")
            recipe = values[0]
            continue
        negated = False
        try:
            key, opt = _resolve_option(cls, raw, known)
        except ConfigError:
            stripped = _negated(raw)
            if stripped is None or values:
                raise
            key, opt = _resolve_option(cls, stripped, known)
            if opt is None or _strip_optional(opt.type) is not bool:
                raise ConfigError(f"--{raw}: only a boolean option can be negated") from None
            negated = True
        base = _strip_optional(opt.type) if opt else None
        if negated:
            value: Any = False
        elif not values:
            if opt is not None and base is not bool:
                raise ConfigError(f"--{key} needs a value")
            value = True  # a boolean flag (a library's or an old name's: their configs check the type)
        elif typing.get_origin(base) is list:
            value = _parse_value(values[0], opt, key) if len(values) == 1 else values
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
        elif len(values) > 1:
            raise ConfigError(f"--{key} takes one value, got {len(values)}: {' '.join(values)}")
        else:
            value = _parse_value(values[0], opt, key)
        overrides.append((key, value))
    data = load_yaml(recipe) if recipe else {}
    for key, value in overrides:
        _set_dotted(data, key, value)
    return from_dict(cls, data)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"--{dotted}: '{part}' is not a section in the recipe")
    old = data.get(parts[-1])
    data[parts[-1]] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value


def _merge(old: dict, new: dict) -> dict:
    """`new` over `old`, nested mappings merged key by key."""
    out = dict(old)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def _default_repr(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "required"


def format_help(cls, prog: str, description: str) -> str:
    """Usage and every option, grouped by section, with help, choices, range and default."""
    lines = [
        f"usage: {prog} [--config RECIPE.yaml] [--option value ...]",
        "",
        description,
        "",
        "  --config RECIPE.yaml   YAML recipe; options given after it override its values",
    ]
    groups: dict[str, list[Option]] = {}
    for opt in options(cls):
        group = opt.field.metadata.get("group") or opt.section or "options"
        groups.setdefault(group, []).append(opt)
    for name, opts in groups.items():
        lines += ["", f"{name}:"]
        for opt in opts:
            base = _strip_optional(opt.type)
            extra = []
            if typing.get_origin(base) is typing.Literal:
                extra.append("choices: " + ", ".join(map(str, typing.get_args(base))))
            if opt.field.metadata.get("range"):
                extra.append("range: " + range_text(opt.field.metadata["range"]))
            extra.append(f"default: {_default_repr(opt.field)}")
            flag = f"--{opt.name}" + ("" if base is bool else f" {opt.name.split('.')[-1].upper()}")
            lines.append(f"  {flag}")
            lines.append(f"      {opt.field.metadata.get('help', '')} ({'; '.join(extra)})")
    for section, sub in _sections(cls).items():
        spec = next((f.metadata["passthrough"] for f in dataclasses.fields(sub) if f.metadata.get("passthrough")), None)
        if spec:
            head = f"--{section}." if section else "--"
            lines += [
                "",
                f"{section or 'training'} also takes every field of {spec.replace(':', '.')} as {head}FIELD value "
                f"(e.g. {head}lr_scheduler_type linear).",
            ]
    return "\n".join(lines) + "\n"
