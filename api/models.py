"""Request and response models of the HTTP API (they make up the OpenAPI schema at /docs)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

EMBEDDING_DIM = 512


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


class Filters(BaseModel):
    """Metadata the neighbours must have. A list means "any of these"."""

    model_config = ConfigDict(extra="forbid")

    label: str | list[str] | None = None
    subject_id: str | list[str] | None = None
    dataset: str | list[str] | None = None
    device: str | list[str] | None = None
    recording_id: str | list[str] | None = None

    def active(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            out[name] = [value] if isinstance(value, str) else list(value)
        return out


class VectorSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vector: list[float] = Field(
        ..., description=f"A {EMBEDDING_DIM}-d embedding from the store's model."
    )
    k: int = Field(10, ge=1, description="Neighbours to return (at most the server's max_k).")
    filters: Filters | None = None
    include_embedding: bool = False

    @field_validator("vector")
    @classmethod
    def _shape(cls, value: list[float]) -> list[float]:
        if len(value) != EMBEDDING_DIM:
            raise ValueError(f"must have {EMBEDDING_DIM} values, got {len(value)}")
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise ValueError("must contain only finite numbers (no NaN or infinity)")
        return value


class StoredClip(BaseModel):
    """What the store keeps about a clip, shared by search results and clip look-ups."""

    clip_id: str
    label: str | None = None
    subject_id: str | None = None
    dataset: str | None = None
    device: str | None = None
    recording_id: str | None = None
    offset_s: float | None = None
    audio_uri: str | None = None
    embedding: list[float] | None = None


class Neighbour(StoredClip):
    score: float = Field(..., description="Cosine similarity (larger is closer).")
    distance: float = Field(..., description="1 - cosine similarity (smaller is closer).")


class VectorSearchResponse(BaseModel):
    model_id: str
    results: list[Neighbour]


class WindowResult(BaseModel):
    offset_s: float
    results: list[Neighbour]


class RecordingMatch(BaseModel):
    recording_id: str
    best_clip_id: str
    distance: float
    score: float
    query_offset_s: float
    label: str | None = None
    subject_id: str | None = None
    dataset: str | None = None
    audio_uri: str | None = None


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


class EntityRow(BaseModel):
    """One row of a training-set request: a clip and the time its features must be valid at."""

    model_config = ConfigDict(extra="allow")

    clip_id: str = Field(..., min_length=1)
    event_timestamp: dt.datetime


class TrainingSetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entities: list[EntityRow] | None = Field(None, description="Clips and timestamps.")
    seeds: list[str] | None = Field(None, description="Seed clip ids for 'more like these'.")
    k: int = Field(10, ge=1, description="Neighbours per seed (with seeds).")


class TrainingSetResponse(BaseModel):
    rows: list[dict[str, Any]]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    index_vectors: int
    encoder: str | None
    model_id: str | None
    detail: str | None = None


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    return {code: {"model": ErrorResponse} for code in codes}
