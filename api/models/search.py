"""Search requests and results: vector, audio and clip look-ups, and their filters."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from fastapi.exceptions import RequestValidationError
from feast.filter_models import ComparisonFilter, CompoundFilter
from hear_features.api.models.text import MAX_FILTER_VALUES, MAX_TEXT, FilterValues, unicode_text
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from hear_features.featurestore.search import Filter, Match
from hear_features.query import RecordingHit
from hear_features.schema import EMBEDDING_DIM

if TYPE_CHECKING:
    from hear_features.api.privacy import Disclosure


class WindowStrategy(StrEnum):
    every = "every"
    """Every 2 s window of the upload (10 % overlap)."""
    strongest = "strongest"
    """Only the window centred on the loudest burst."""


class Aggregation(StrEnum):
    window = "window"
    """One neighbour list per query window."""
    recording = "recording"
    """One list of stored recordings, each ranked by its best-matching clip."""


#: Comparisons an object-valued filter field may hold (Feast's ComparisonFilter types).
FILTER_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
#: The types of one value a study-column filter compares with.
_SCALARS = (str, int, float, bool)


class Filters(BaseModel):
    """Metadata the neighbours must have: the fields below, and any other feature of the
    store by name (a study's own columns: ``gender``, ``covid``, ``age`` ...). A value
    means "equal to", a list "any of" (1 to :data:`MAX_FILTER_VALUES` values); for study
    columns an object of comparisons (``{"gte": 40, "lt": 60}``; ``eq ne gt gte lt lte in
    nin``) means all of them. Values are converted to the column's type (``"40"`` for a
    number column, ``"true"`` for a boolean one). A field the store does not have is a
    422 that lists the fields it has. Filtering on ``subject_id`` needs a key that may
    see subject ids, on a study column one that may see metadata."""

    model_config = ConfigDict(extra="allow")

    label: FilterValues | None = None
    subject_id: FilterValues | None = None
    dataset: FilterValues | None = None
    device: FilterValues | None = None
    recording_id: FilterValues | None = None

    @model_validator(mode="after")
    def _study_fields(self) -> Filters:
        for name, value in (self.model_extra or {}).items():
            check_filter_value(name, value)
        return self

    @classmethod
    def from_fields(cls, where: str, fields: dict[str, Any]) -> Filters:
        """Filters from query or form fields, checked like a JSON body (422 naming the
        field, e.g. ``query.label: List should have at most 100 items``)."""
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            raise RequestValidationError(
                [{**err, "loc": (where, *err["loc"])} for err in exc.errors()]
            ) from None

    def active(self) -> dict[str, Any]:
        """Every field given, with its value (built-in ones as lists)."""
        return {name: value for name, value in self.model_dump().items() if value is not None}

    def to_feast(self) -> Filter | None:
        """A Feast filter: all fields must match (None: no filter). The online store's
        search checks the fields and converts the values to their types."""
        parts: list[Filter] = []
        for name, value in self.active().items():
            if isinstance(value, dict):
                parts += [ComparisonFilter(type=op, key=name, value=v) for op, v in value.items()]
            elif isinstance(value, list):
                parts.append(
                    ComparisonFilter(type="in", key=name, value=value)
                    if len(value) > 1
                    else ComparisonFilter(type="eq", key=name, value=value[0])
                )
            else:
                parts.append(ComparisonFilter(type="eq", key=name, value=value))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else CompoundFilter(type="and", filters=parts)


def check_filter_value(name: str, value: Any) -> None:
    """A study-column filter: a scalar, a list of 1 to :data:`MAX_FILTER_VALUES` scalars,
    or an object of comparisons (``ValueError`` naming the field otherwise: a 422)."""

    def scalar(v: Any) -> bool:
        if isinstance(v, str):
            unicode_text(v)  # a lone surrogate: ValueError, a 422
            return len(v) <= MAX_TEXT
        return isinstance(v, _SCALARS)

    def scalars(values: Any) -> bool:
        return (
            isinstance(values, list)
            and 0 < len(values) <= MAX_FILTER_VALUES
            and all(scalar(v) for v in values)
        )

    if len(unicode_text(name)) > MAX_TEXT:
        raise ValueError(f"filter field name longer than {MAX_TEXT} characters")
    if scalar(value) or scalars(value):
        return
    if isinstance(value, dict) and value:
        unknown = [op for op in value if op not in FILTER_OPS]
        if unknown:
            raise ValueError(
                f"filter {name}: unknown comparison {unknown[0]!r} (use {', '.join(FILTER_OPS)})"
            )
        for op, v in value.items():
            if not (scalars(v) if op in ("in", "nin") and isinstance(v, list) else scalar(v)):
                raise ValueError(f"filter {name} {op}: {v!r} is not a value this comparison takes")
        return
    raise ValueError(
        f"filter {name}: give a value, a list of 1 to {MAX_FILTER_VALUES} values, or an "
        'object of comparisons such as {"gte": 40}'
    )


#: A number that is not NaN or infinite ("vector.3: Input should be a finite number").
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class VectorSearchRequest(BaseModel):
    """A JSON body: ``k`` must be a JSON integer and ``include_embedding`` a JSON boolean
    (``true`` is not k=1, ``"5"`` is not 5: a type mix-up is refused, not guessed)."""

    model_config = ConfigDict(extra="forbid")

    vector: list[FiniteFloat] = Field(
        ..., description=f"A {EMBEDDING_DIM}-d embedding from the store's model."
    )
    k: StrictInt = Field(10, ge=1, description="Neighbours to return (at most the server's max_k).")
    filters: Filters | None = None
    include_embedding: StrictBool = False

    @field_validator("vector", mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        # The length first, so that a million NaNs are one error, not a million; then
        # pydantic-core checks each value (FiniteFloat), in Rust.
        if isinstance(value, list | tuple) and len(value) != EMBEDDING_DIM:
            raise ValueError(f"must have {EMBEDDING_DIM} values, got {len(value)}")
        return value


class StoredClip(BaseModel):
    """What the store keeps about a clip, shared by search results and clip look-ups.

    Fields the calling key may not see are absent (:mod:`hear_features.api.privacy`):
    ``subject_id`` and ``embedding`` need keys allowed to see them, ``path`` one allowed to
    see paths, and study metadata columns one allowed to see metadata."""

    model_config = ConfigDict(extra="allow")

    clip_id: str
    label: str | None = None
    subject_id: str | None = Field(None, description="Only for keys that may see subject_id.")
    dataset: str | None = None
    device: str | None = None
    recording_id: str | None = None
    offset_s: float | None = None
    path: str | None = Field(
        None,
        description="The recording's path relative to its audio root (only for keys that "
        "may see paths; null when it lies under no configured root). Server paths are "
        "never returned.",
    )
    embedding: list[float] | None = Field(None, description="Only for keys that may see it.")


class Neighbour(StoredClip):
    score: float = Field(..., description="Cosine similarity (larger is closer).")
    distance: float = Field(..., description="1 - cosine similarity (smaller is closer).")

    @staticmethod
    def plain(match: Match, disclosure: Disclosure) -> dict[str, Any]:
        """This model's JSON object for ``match``, as plain values: what the caller may see
        of the clip, its score and its distance.

        Search routes answer with these (:class:`~hear_features.api.responses.ModelResponse`
        renders them) rather than a model object per hit: building ten models per search
        (``model_construct``) was about a sixth of the server's work for a vector search.
        The values are our own store's, so there is nothing to validate."""
        return {
            "clip_id": match.clip_id,
            **disclosure.fields(match.features),
            "score": match.score,
            "distance": match.distance,
        }

    @classmethod
    def of(cls, match: Match, disclosure: Disclosure) -> Neighbour:
        """:meth:`plain` as a model, for answers that nest hits in other models."""
        return cls.model_construct(**cls.plain(match, disclosure))


class VectorSearchResponse(BaseModel):
    model_id: str
    results: list[Neighbour]


class WindowResult(BaseModel):
    offset_s: float
    results: list[Neighbour]


class RecordingMatch(BaseModel):
    """A stored recording and its clip nearest to the query (fields as in
    :class:`StoredClip`: what the calling key may see)."""

    recording_id: str
    best_clip_id: str
    distance: float
    score: float
    query_offset_s: float
    label: str | None = None
    subject_id: str | None = None
    dataset: str | None = None
    device: str | None = None
    path: str | None = None

    @classmethod
    def of(cls, hit: RecordingHit, disclosure: Disclosure) -> RecordingMatch:
        best: Match = hit.best
        shown = disclosure.fields(best.features)
        return cls.model_construct(
            recording_id=hit.recording_id,
            best_clip_id=best.clip_id,
            distance=best.distance,
            score=best.score,
            query_offset_s=hit.query_offset_s,
            **{name: shown[name] for name in RECORDING_FIELDS if name in shown},
        )


#: The stored fields a recording match carries (when the caller may see them).
RECORDING_FIELDS = ("label", "subject_id", "dataset", "device", "path")


class AudioSearchResponse(BaseModel):
    model_id: str
    aggregation: Aggregation
    windows: list[WindowResult] | None = None
    recordings: list[RecordingMatch] | None = None


class ClipResponse(StoredClip):
    model_id: str | None = None
    event_timestamp: dt.datetime | None = None


class SimilarResponse(BaseModel):
    clip_id: str
    model_id: str
    results: list[Neighbour]
