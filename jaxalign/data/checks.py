"""Strict field checks shared by every record schema.

Every error is a `DataError` whose message names where the row came from (``"data/x.jsonl: row 7"``),
the field path inside the row (``'messages[2].role'``) and what was wrong, so a user with a
100,000-line file can jump straight to the bad line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from jaxalign.errors import UserError

DEFAULT_WHERE = "record"


class DataError(UserError, ValueError):
    """A data row that does not match its schema; the message names the file, the row and the field."""


def type_name(value: Any) -> str:
    """JSON-flavoured name of a value's type, as used in error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def field_error(where: str, path: str, message: str) -> DataError:
    """`DataError` for one field: ``"<where>: field '<path>': <message>"``."""
    return DataError(f"{where}: field '{path}': {message}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _matches(value: Any, expected: tuple[type, ...]) -> bool:
    # bool is an int subclass in Python; a JSON `true` where a count is expected is a data bug.
    if isinstance(value, bool) and bool not in expected:
        return False
    return isinstance(value, expected)


def require_object(value: Any, where: str, path: str = "") -> Mapping[str, Any]:
    """`value` itself must be a JSON object (a row, or a nested object at `path`)."""
    if not isinstance(value, Mapping):
        if not path:
            raise DataError(f"{where}: expected a JSON object, got {type_name(value)}")
        raise field_error(where, path, f"expected object, got {type_name(value)}")
    return value


def check_keys(row: Mapping[str, Any], allowed: Iterable[str], where: str, prefix: str = "") -> None:
    """Reject keys outside `allowed`: a misspelt optional field must not be silently dropped."""
    allowed = list(allowed)
    for key in row:
        if key not in allowed:
            path = f"{prefix}.{key}" if prefix else str(key)
            raise field_error(where, path, f"unknown field; valid fields are {allowed}")


def take(row: Mapping[str, Any], key: str, expected: type | tuple[type, ...], where: str, prefix: str = "", *,
         required: bool = True, default: Any = None, nullable: bool = False, nonempty: bool = False) -> Any:
    """The value of `row[key]`, checked against `expected` (a type or tuple of types).

    A missing required key, a wrong type (``null`` only when `nullable`), or an empty string when
    `nonempty` raise `DataError` naming ``where`` and the field path ``prefix.key``.
    """
    path = f"{prefix}.{key}" if prefix else key
    expected = expected if isinstance(expected, tuple) else (expected,)
    if key not in row:
        if required:
            raise field_error(where, path, "required field is missing")
        return default
    value = row[key]
    if value is None and nullable:
        return None
    if not _matches(value, expected):
        names = " | ".join("object" if t is dict else "list" if t is list else t.__name__ for t in expected)
        if nullable:
            names += " | null"
        raise field_error(where, path, f"expected {names}, got {type_name(value)} {_short(value)}")
    if nonempty and isinstance(value, str) and not value.strip():
        raise field_error(where, path, "must be a non-empty string")
    return value


def require_choice(value: Any, choices: Iterable[str], where: str, path: str) -> str:
    """`value` must be one of `choices` (listed in the error message)."""
    choices = list(choices)
    if value not in choices:
        raise field_error(where, path, f"expected one of {choices}, got {_short(value)}")
    return value


def jsonable(value: Any) -> Any:
    """A JSON-stable copy of `value`: tuples become lists, numpy scalars Python numbers, the rest str.

    Records must read back *identical* after a JSONL or array_record round trip, so anything that
    JSON would change (a tuple, a non-string key, NaN, a numpy int) is converted once, up front.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        as_float = float(value)
        return as_float if math.isfinite(as_float) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def _is_json(value: Any) -> bool:
    # Exact types: a numpy int compares equal to an int but json.dumps rejects it.
    if value is None or type(value) in (bool, int, str):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is dict:
        return all(type(k) is str and _is_json(v) for k, v in value.items())
    if type(value) is list:
        return all(_is_json(v) for v in value)
    return False


def check_json_meta(meta: Any, where: str, path: str = "meta") -> dict[str, Any]:
    """`meta` must be an object that survives a JSON round trip unchanged."""
    if not isinstance(meta, Mapping):
        raise field_error(where, path, f"expected object, got {type_name(meta)}")
    if not _is_json(meta):
        raise field_error(where, path, "must hold only JSON values (str keys, no tuples/NaN/numpy); "
                                       "convert it with jaxalign.data.checks.jsonable")
    return dict(meta)
