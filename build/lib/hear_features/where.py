"""``--where`` conditions: ``COLUMN OP VALUE`` on any metadata column, parsed, never evaluated.

Grammar (one condition per ``--where``; several are joined with AND)::

    label = cough                  =, ==, !=, <, <=, >, >=
    age >= 18.5
    dataset in coughvid, coswara   in / not in: a comma-separated list
    device not in "phone, old"     quotes ('...' or "...") keep commas in a value

Values are converted to the column's type before comparing: numbers for numeric
columns, ``true``/``false`` for boolean ones, ISO 8601 times (naive means UTC) for
timestamps, text otherwise; order comparisons (``<``...) on text columns are refused.
A row whose value is missing matches no condition, ``!=`` and ``not in`` included.
Nothing is passed to ``eval``, ``DataFrame.query`` or SQL, so a condition cannot run
code, and the same parser works for any column a table gains later (study metadata).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hear_features.errors import ProbeError

_SYMBOL = re.compile(r"^\s*(?P<col>[^\s=!<>]+)\s*(?P<op>==|!=|<=|>=|=|<|>)\s*(?P<val>.*?)\s*$")
_MEMBERSHIP = re.compile(r"^\s*(?P<col>\S+)\s+(?P<op>not\s+in|in)\s+(?P<val>.+?)\s*$", re.I)
_ORDER = ("<", "<=", ">", ">=")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True)
class Condition:
    """One parsed condition; ``values`` holds one item except for ``in`` / ``not in``."""

    column: str
    op: str
    values: tuple[str, ...]
    text: str

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Condition:
    """Parse ``COLUMN OP VALUE``; raises :class:`ProbeError` naming what is wrong."""
    member = _MEMBERSHIP.match(text)
    if member:
        op = "not in" if member["op"].lower().startswith("not") else "in"
        values = _split_list(member["val"], text)
        return Condition(member["col"], op, values, text.strip())
    symbol = _SYMBOL.match(text)
    if not symbol:
        raise ProbeError(
            f"--where {text!r} is not COLUMN OP VALUE (OP: = != < <= > >= in, not in), "
            "e.g. --where 'dataset = coughvid'"
        )
    value = _unquote(symbol["val"])
    if value == "":
        raise ProbeError(f"--where {text!r} has no value after {symbol['op']}")
    op = "==" if symbol["op"] == "=" else symbol["op"]
    return Condition(symbol["col"], op, (value,), text.strip())


def apply(frame: pd.DataFrame, conditions: list[Condition]) -> np.ndarray:
    """A boolean mask of the rows of ``frame`` that meet every condition."""
    mask = np.ones(len(frame), dtype=bool)
    for cond in conditions:
        if cond.column not in frame.columns:
            known = ", ".join(sorted(str(c) for c in frame.columns))
            raise ProbeError(f"--where {cond.text!r}: no column {cond.column!r} (columns: {known})")
        mask &= _matches(frame[cond.column], cond)
    return mask


def _matches(column: pd.Series, cond: Condition) -> np.ndarray:
    kind, values = _typed_values(column, cond)
    present = column.notna().to_numpy()
    data = _typed_column(column, kind)
    if cond.op in ("in", "not in"):
        hit = np.asarray(data.isin(values))
        result = hit if cond.op == "in" else ~hit
    else:
        value = values[0]
        if cond.op in _ORDER and kind == "text":
            raise ProbeError(
                f"--where {cond.text!r}: column {cond.column!r} holds text; use =, !=, in or not in"
            )
        ops = {
            "==": data.__eq__,
            "!=": data.__ne__,
            "<": data.__lt__,
            "<=": data.__le__,
            ">": data.__gt__,
            ">=": data.__ge__,
        }
        result = np.asarray(ops[cond.op](value), dtype=bool)
    return result & present


def _kind(column: pd.Series) -> str:
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "time"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    present = column.dropna()
    if len(present) and all(isinstance(v, bool | np.bool_) for v in present):
        return "bool"
    return "text"


def _typed_column(column: pd.Series, kind: str) -> pd.Series:
    if kind == "time":
        return pd.to_datetime(column, utc=True)
    if kind == "text":
        return column.astype(object).where(column.isna(), column.astype(str))
    return column


def _typed_values(column: pd.Series, cond: Condition) -> tuple[str, list[Any]]:
    kind = _kind(column)
    return kind, [_convert(v, kind, cond) for v in cond.values]


def _convert(value: str, kind: str, cond: Condition) -> Any:
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            raise ProbeError(
                f"--where {cond.text!r}: {value!r} is not a number "
                f"(column {cond.column!r} holds numbers)"
            ) from None
        if np.isnan(number):
            raise ProbeError(f"--where {cond.text!r}: NaN matches nothing")
        return number
    if kind == "bool":
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ProbeError(
            f"--where {cond.text!r}: {value!r} is not true or false "
            f"(column {cond.column!r} holds booleans)"
        )
    if kind == "time":
        try:
            stamp = pd.Timestamp(value)
        except ValueError:
            raise ProbeError(
                f"--where {cond.text!r}: {value!r} is not an ISO 8601 date/time "
                f"(column {cond.column!r} holds timestamps)"
            ) from None
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return value


def _split_list(raw: str, text: str) -> tuple[str, ...]:
    raw = raw.strip()
    if raw[:1] in "([" and raw[-1:] in ")]":
        raw = raw[1:-1]
    try:
        quote = "'" if "'" in raw and '"' not in raw else '"'
        items = next(csv.reader([raw], skipinitialspace=True, quotechar=quote))
    except (csv.Error, StopIteration):
        raise ProbeError(f"--where {text!r}: cannot read the list of values") from None
    values = tuple(_unquote(item.strip()) for item in items if item.strip())
    if not values:
        raise ProbeError(f"--where {text!r} lists no values")
    return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
