"""Configuration machinery: frozen dataclasses <-> YAML, with `a.b=value` overrides.

Every config in jaxalign is a frozen, kw_only dataclass. YAML files under `configs/` are only a
serialisation of that tree: the same nesting, unknown keys rejected with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Literal, TypeVar

import yaml

from jaxalign.errors import UserError

C = TypeVar("C")


class ConfigError(UserError, ValueError):
    """A config file, key or value is invalid; the message names the key path (and file)."""


class FieldError(ConfigError):
    """One field of a config dataclass is invalid (raised from `__post_init__`).

    `from_dict` prefixes the field with its key path, so the user reads `optim.warmup_steps: must be
    >= 0, got -1` for a nested section.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def require(obj: Any, field: str, ok: bool, problem: str) -> None:
    """Raises `FieldError(field, problem + ", got <value>")` unless `ok`; for `__post_init__` checks."""
    if not ok:
        raise FieldError(field, f"{problem}, got {getattr(obj, field)!r}")


def positive(obj: Any, *fields: str) -> None:
    """Each named field of `obj` must be > 0 (a count, a size, a cadence)."""
    for name in fields:
        require(obj, name, getattr(obj, name) > 0, "must be > 0")


def non_negative(obj: Any, *fields: str) -> None:
    """Each named field of `obj` must be >= 0 (0 usually means "off" or "all")."""
    for name in fields:
        require(obj, name, getattr(obj, name) >= 0, "must be >= 0")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Converts a YAML value to the annotated type `tp`, failing with the key path on mismatch."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where=where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp}")


def from_dict(cls: type[C], data: Any, *, where: str = "") -> C:
    """Builds dataclass `cls` from a nested mapping; unknown keys fail with the valid ones listed."""
    label = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    moved = getattr(cls, "MOVED", {})
    for name in sorted(set(data) & set(moved)):
        raise ConfigError(f"{where + '.' if where else ''}{name}: this key moved to `{moved[name]}` "
                          f"(write it under `{moved[name].rsplit('.', 1)[0]}:` in YAML, or as {moved[name]}=... "
                          "on the command line)")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{label}: unknown key(s) {unknown}; valid keys are {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        default = _default(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            # A section overrides the fields it names on top of its field's default, never the class's
            # defaults: `run: {save_every: 5}` keeps the trainer's own `run.run_dir`.
            value = _merged(to_dict(default), value)
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise FieldError(f"{where}.{e.field}" if where else e.field, e.problem) from None
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{label}: {e}") from e


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _merged(base: dict, update: dict) -> dict:
    """`base` with `update` applied key by key, recursing where both hold a mapping."""
    out = dict(base)
    for key, value in update.items():
        both = isinstance(out.get(key), dict) and isinstance(value, dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def to_dict(obj: Any) -> Any:
    """The YAML-serialisable nested mapping of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict, overrides: typing.Sequence[str]) -> dict:
    """Applies `a.b.c=value` overrides (value parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load(cls: type[C], path: str | os.PathLike | None = None, overrides: typing.Sequence[str] = ()) -> C:
    """Loads `cls` from a YAML file (or defaults when `path` is None) and applies overrides."""
    data: dict = {}
    if path is not None:
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
    apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def dump(obj: Any, path: str | os.PathLike) -> None:
    """Writes a config dataclass as YAML."""
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(obj), f, sort_keys=False)
