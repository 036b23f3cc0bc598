"""Study metadata: the columns a study keeps per recording beyond the built-in ones.

A study declares them once, in the ``batch_engine`` section of ``feature_store.yaml``,
each with its type, so that ``feast apply``, ``hear-features register``, ``feast
materialize``, searches and training sets all read the same declaration::

    batch_engine:
      study_columns:
        gender: string
        covid: bool
        smoker: bool
        age: int64

Types: ``string``, ``int64``, ``float64`` and ``bool`` (Feast's ``String``, ``Int64``,
``Float64`` and ``Bool``; ``str``, ``int``, ``float``, ``double`` and ``boolean`` are
read as these). A declared column is nullable: a recording without a value, and every
row registered before the column was declared, holds null.

Names are identifiers (a letter or ``_``, then letters, digits or ``_``; at most 64
characters). A name that clashes with a built-in column (``label``, ``clip_id``,
``distance``...: :data:`hear_features.schema.BUILT_IN_NAMES`), compared without case as
DuckDB compares names, or that starts with ``given_``, is refused with a
:class:`~hear_features.errors.ConfigError`.

Manifest values are converted to the declared type one cell at a time
(:meth:`StudyColumns.convert`); a cell that does not fit is refused naming its row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from hear_features.errors import ConfigError
from hear_features.schema import BUILT_IN_NAMES

#: The declarable types and their Arrow types.
#: Words a manifest writes for "no value" in a number or boolean column. In a text column
#: they are kept as written: "None" can be a symptom level and "NA" a site's name.
MISSING_WORDS: Final = frozenset({"na", "n/a", "nan", "null", "none"})
STUDY_TYPES: Final = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}
_ALIASES: Final = {
    "str": "string",
    "text": "string",
    "int": "int64",
    "integer": "int64",
    "float": "float64",
    "double": "float64",
    "boolean": "bool",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TRUE: Final = frozenset({"true", "t", "yes", "y", "1"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "0"})
#: Where the declaration lives, for messages.
DECLARED_IN: Final = "feature_store.yaml, batch_engine: study_columns:"


def type_name(value: object, column: str) -> str:
    """The canonical name of a declared type (``String`` and ``int`` are read too)."""
    key = str(value).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in STUDY_TYPES:
        raise ConfigError(
            f"study column {column!r} has type {value!r}; use one of {', '.join(STUDY_TYPES)}"
        )
    return key


def check_name(name: object) -> str:
    """``name`` if a study column may be called so, else :class:`ConfigError` saying why."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"study column {name!r} is not an identifier (a letter or _, then letters, "
            "digits or _; at most 64 characters)"
        )
    clash = next((b for b in sorted(BUILT_IN_NAMES) if b.lower() == name.lower()), None)
    if clash is not None:
        raise ConfigError(
            f"study column {name!r} clashes with the built-in column {clash!r}; rename it "
            f"(built-in names: {', '.join(sorted(BUILT_IN_NAMES))})"
        )
    if name.lower().startswith("given_"):
        raise ConfigError(
            f"study column {name!r} starts with 'given_', which training sets use for the "
            "caller's own columns; rename it"
        )
    return name


@dataclass(frozen=True)
class StudyColumns:
    """The declared study columns of a repository, in declaration order (name -> type)."""

    types: tuple[tuple[str, str], ...] = ()

    @classmethod
    def declare(cls, raw: Mapping[str, object] | None) -> StudyColumns:
        """Check a ``study_columns`` mapping (names and types) and normalise its types."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"study_columns must map column names to types (e.g. age: int64), "
                f"not {type(raw).__name__}"
            )
        seen: dict[str, str] = {}
        out = []
        for name, kind in raw.items():
            check_name(name)
            if name.lower() in seen:
                raise ConfigError(
                    f"study columns {seen[name.lower()]!r} and {name!r} differ only in case"
                )
            seen[name.lower()] = name
            out.append((name, type_name(kind, name)))
        return cls(tuple(out))

    def __bool__(self) -> bool:
        return bool(self.types)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.types)

    def __contains__(self, name: object) -> bool:
        return any(name == n for n, _ in self.types)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.types)

    def as_dict(self) -> dict[str, str]:
        return dict(self.types)

    @property
    def fields(self) -> tuple[pa.Field, ...]:
        """The columns as nullable Arrow fields, in declaration order."""
        return tuple(pa.field(name, STUDY_TYPES[kind]) for name, kind in self.types)

    def extend(self, schema: pa.Schema) -> pa.Schema:
        """``schema`` with the study columns appended."""
        return pa.schema([*schema, *self.fields]) if self.types else schema

    def convert(self, name: str, value: object, where: str) -> Any:
        """One cell of column ``name`` as its declared type (None for an empty cell).

        ``where`` names the cell in the error (``manifest m.csv, row 3``)."""
        kind = self.as_dict()[name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, str):
            value = value.strip()
            if value == "" or (kind != "string" and value.lower() in MISSING_WORDS):
                return None
        try:
            return _CONVERTERS[kind](value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(
                f"{where}: {value!r} in column {name!r} is not a {_IN_WORDS[kind]} "
                f"(declared {kind} in {DECLARED_IN})"
            ) from None


def _string(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a CSV/Parquet reader's float for a whole number
    return str(value)


def _int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise OverflowError
        return value
    number = float(str(value))
    if not number.is_integer():
        raise ValueError("not a whole number")
    return _int(int(number))


def _float(value: object) -> float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    number = float(str(value)) if not isinstance(value, int | float) else float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean")


_CONVERTERS: Final = {"string": _string, "int64": _int, "float64": _float, "bool": _bool}
_IN_WORDS: Final = {
    "string": "text",
    "int64": "whole number",
    "float64": "finite number",
    "bool": "boolean (true/false, yes/no, 1/0)",
}


def infer_type(values: Iterable[object]) -> str:
    """The narrowest declarable type that every non-empty value fits (for suggestions);
    words that mean a missing value in the other types (``N/A``, ``NaN`` ...) are
    skipped, as :meth:`StudyColumns.convert` reads them."""
    present = [v for v in values if v is not None and str(v).strip() != "" and v == v]
    known = [v for v in present if not (isinstance(v, str) and v.strip().lower() in MISSING_WORDS)]
    for kind in ("bool", "int64", "float64"):
        try:
            for value in known:
                _CONVERTERS[kind](value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            continue
        if known:
            return kind
    return "string"


def declaration_hint(columns: Mapping[str, str]) -> str:
    """YAML a user can paste to declare ``columns`` (name -> type)."""
    lines = "".join(f"\n    {name}: {kind}" for name, kind in columns.items())
    return f"batch_engine:\n  study_columns:{lines}"
