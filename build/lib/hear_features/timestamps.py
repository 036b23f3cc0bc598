"""The one way event timestamps are read: by ``register``, ``training-set`` and the API.

Rules, in full:

* text must be ISO 8601 (``2024-03-01``, ``2024-03-01T12:00``, ``2024-03-01 12:00:00Z``,
  ``2024-03-01T12:00:00.5+05:30`` ...), read by :meth:`datetime.datetime.fromisoformat`;
  date/time objects (Python, pandas, numpy; a Parquet timestamp column) are taken as they
  are;
* **a value without an offset is UTC**; a value with one is converted to UTC;
* every value is read on its own: a column that mixes offsets, or offsets and naive
  values, gives each row the instant it names, in any row order (pandas'
  ``to_datetime(format="ISO8601")`` instead reads a naive value with the previous row's
  offset, so the result depended on row order);
* numbers are refused, not guessed at (seconds? milliseconds? since when?), and so are
  empty cells;
* results are UTC with microsecond resolution (what the Parquet tables store).

A bad value raises :class:`TimestampError`, which names the value and, for a column,
where it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from numbers import Number

import numpy as np
import pandas as pd

from hear_features.errors import TimestampError

#: The resolution timestamps are stored at.
TIMESTAMP_DTYPE = "datetime64[us, UTC]"


def parse_timestamp(value: object, what: str = "timestamp") -> dt.datetime:
    """One value as an aware UTC ``datetime`` (naive values are UTC); see the module doc."""
    parsed = _parse(value)
    if isinstance(parsed, str):
        raise TimestampError(f"{what} {value!r} {parsed}")
    return parsed


def parse_timestamps(
    values: Iterable[object],
    what: str = "event_timestamp",
    where: Callable[[int], str] | None = None,
) -> pd.Series:
    """A column of values as ``datetime64[us, UTC]``, each value read on its own.

    ``where(i)`` says where row ``i`` (0-based) is, for the message of the first bad
    value (``"manifest m.csv, row 7"``).
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if pd.api.types.is_datetime64_any_dtype(series.dtype) and not series.isna().any():
        converted = (
            series.dt.tz_convert("UTC")
            if getattr(series.dt, "tz", None) is not None
            else series.dt.tz_localize("UTC")
        )
        return converted.astype(TIMESTAMP_DTYPE).reset_index(drop=True)
    cache: dict[str, dt.datetime | str] = {}  # manifests repeat their timestamps
    out: list[dt.datetime] = []
    for i, value in enumerate(series.tolist()):
        if isinstance(value, str):
            parsed = cache.get(value) or cache.setdefault(value, _parse(value))
        else:
            parsed = _parse(value)
        if isinstance(parsed, str):
            place = f"{where(i)}: " if where is not None else ""
            raise TimestampError(f"{place}{what} {value!r} {parsed}")
        out.append(parsed)
    # Through numpy's microseconds: pandas' default nanoseconds end in the year 2262.
    naive = np.array([t.replace(tzinfo=None) for t in out], dtype="datetime64[us]")
    return pd.Series(naive).dt.tz_localize("UTC")


def _parse(value: object) -> dt.datetime | str:
    """The UTC datetime ``value`` names, or why it names none (a phrase for the message)."""
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    empty = isinstance(value, str) and not value.strip()
    if empty or value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "is empty; every row needs an ISO 8601 date/time"
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    if isinstance(value, dt.datetime):
        return _utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, Number | np.number) and not isinstance(value, bool):
        return "is a number, not a date/time; give ISO 8601 text such as 2024-03-01T12:00:00Z"
    if not isinstance(value, str):
        return "is not an ISO 8601 date/time"
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError as exc:
        return f"is not an ISO 8601 date/time{_detail(exc)}"
    return _utc(parsed)


def _detail(exc: ValueError) -> str:
    """What :meth:`~datetime.datetime.fromisoformat` found wrong, in words (its message
    for an offset of a day or more is Python code: ``timedelta(hours=24)``)."""
    text = str(exc)
    if text.startswith("Invalid isoformat"):
        return ""
    if "timedelta" in text:
        return " (its UTC offset must be between -23:59 and +23:59)"
    return f" ({text})"


def _utc(value: dt.datetime) -> dt.datetime | str:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is in the year 0 in UTC
        return "is outside the years 1 to 9999 once converted to UTC"
