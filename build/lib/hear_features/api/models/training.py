"""Training-set requests: entity rows (point in time) or seed clips, and the answer."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any

from hear_features.api.models.text import MAX_TEXT, Text, unicode_text
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, model_validator

from hear_features.errors import TimestampError
from hear_features.schema import (
    CREATED,
    EVENT_TIMESTAMP,
    JOIN_KEY,
    TRAINING_FEATURES,
)
from hear_features.timestamps import parse_timestamp

#: Rows or seeds one request may list at all (a key's own limit is usually lower).
MAX_LIST = 100_000
#: Extra columns of entity rows: identifiers of at most 64 characters.
EXTRA_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: Columns a training set makes itself: an extra column may not be named like one of
#: these in another case (DuckDB compares names without case).
BUILT_IN_COLUMNS = frozenset({JOIN_KEY, EVENT_TIMESTAMP, CREATED, "seed_id", *TRAINING_FEATURES})
#: Years a training-set timestamp may name (what pandas, DuckDB and Parquet all hold).
YEARS = (1678, 2261)


def _entity_timestamp(value: object) -> dt.datetime:
    parsed = parse_timestamp(value, "event_timestamp")
    if not YEARS[0] <= parsed.year <= YEARS[1]:
        raise TimestampError(
            f"event_timestamp {parsed.isoformat()} is outside the years "
            f"{YEARS[0]} to {YEARS[1]} that the offline store can hold"
        )
    return parsed


class EntityRow(BaseModel):
    """One row of a training-set request: a clip and the time its features must be valid
    at, plus any extra columns of your own (identifiers; text, numbers, booleans or null,
    one type per column), returned unchanged beside the features."""

    model_config = ConfigDict(extra="allow")

    clip_id: Text = Field(..., min_length=1)
    event_timestamp: Annotated[
        dt.datetime,
        BeforeValidator(_entity_timestamp),
        Field(description="ISO 8601; without an offset it is UTC."),
    ]

    @model_validator(mode="after")
    def _extra_columns(self) -> EntityRow:
        for name, value in (self.model_extra or {}).items():
            if not EXTRA_COLUMN.match(name):
                shown = name if len(name) <= 80 else f"{name[:64]}... ({len(name)} characters)"
                raise ValueError(
                    f"extra column {shown!r} must be an identifier (a letter or _, then "
                    "letters, digits or _; at most 64 characters)"
                )
            clash = next(
                (b for b in BUILT_IN_COLUMNS if b.lower() == name.lower() and b != name), None
            )
            if clash is not None:
                raise ValueError(f"extra column {name!r} clashes with built-in column {clash!r}")
            problem = _scalar_problem(value)
            if problem is not None:
                raise ValueError(f"extra column {name!r} {problem}")
        return self


def _scalar_problem(value: object) -> str | None:
    """Why ``value`` cannot be an extra column's cell (None: it can)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        unicode_text(value)
        if len(value) > MAX_TEXT:
            return f"holds text of {len(value)} characters; the limit is {MAX_TEXT}"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "holds NaN or infinity (numbers must be finite)"
    if isinstance(value, int):
        return None if abs(value) < 2**63 else "holds an integer that does not fit in 64 bits"
    return f"must hold text, a number, a boolean or null, not {type(value).__name__}"


class TrainingSetRequest(BaseModel):
    """Either entity rows (point-in-time features) or seed clip ids ("more like these");
    duplicates are served once."""

    model_config = ConfigDict(extra="forbid")

    entities: list[EntityRow] | None = Field(
        default=None, max_length=MAX_LIST, description="Clips and timestamps."
    )
    seeds: list[Annotated[Text, Field(min_length=1)]] | None = Field(
        default=None, max_length=MAX_LIST, description="Seed clip ids for 'more like these'."
    )
    k: StrictInt = Field(10, ge=1, description="Neighbours per seed (with seeds).")

    @model_validator(mode="after")
    def _one_type_per_column(self) -> TrainingSetRequest:
        types: dict[str, type] = {}
        with_value: set[str] = set()
        names: dict[str, str] = {}
        for number, row in enumerate(self.entities or [], 1):
            for name, value in (row.model_extra or {}).items():
                seen = names.setdefault(name.lower(), name)
                if seen != name:
                    raise ValueError(f"extra columns {seen!r} and {name!r} differ only in case")
                if value is None:
                    continue
                with_value.add(name)
                kind = float if type(value) is int else type(value)  # 1 and 1.5 mix
                if types.setdefault(name, kind) is not kind:
                    raise ValueError(
                        f"extra column {name!r} mixes {types[name].__name__} and "
                        f"{kind.__name__} values (entity row {number})"
                    )
        empty = sorted(set(names.values()) - with_value)
        if empty:
            raise ValueError(f"extra column {empty[0]!r} has no value in any row")
        return self

    def extra_columns(self) -> list[str]:
        """The names of the entity rows' extra columns, in first-seen order."""
        return list(
            dict.fromkeys(name for row in self.entities or [] for name in row.model_extra or {})
        )


class TrainingSetResponse(BaseModel):
    rows: list[dict[str, Any]]
    hidden_columns: list[str] = Field(
        default_factory=list,
        description="Columns of the training set left out because this key may not see "
        "them (e.g. embedding, subject_id).",
    )
