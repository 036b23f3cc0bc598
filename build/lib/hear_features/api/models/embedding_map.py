"""The explorer's embedding map: pages of points, pending answers and what it can show."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class MapColumn(BaseModel):
    """One metadata column of the map's points, aligned with ``clip_ids``.

    Text columns are dictionary-encoded (``codes`` index ``categories``, -1 where a point
    has no value); number columns list ``values`` (null where missing)."""

    kind: Literal["category", "number"]
    categories: list[str] | None = None
    codes: list[int] | None = None
    values: list[float | None] | None = None


class EmbeddingMapPage(BaseModel):
    """Points ``offset`` to ``offset + count`` of a 2-D map of the stored embeddings."""

    method: str = Field(..., description="pca or umap")
    generation: int = Field(..., description="The store state the map belongs to.")
    total: int = Field(..., description="Points in the whole map.")
    offset: int
    count: int
    clip_ids: list[str]
    x: list[float] = Field(..., description="Coordinates scaled to [0, 1].")
    y: list[float]
    columns: dict[str, MapColumn] = Field(default_factory=dict)
    seconds: float = Field(..., description="How long computing the projection took.")


class MapPending(BaseModel):
    """The map is being computed in the background; ask again after ``retry_after_s``."""

    method: str
    generation: int
    status: str
    retry_after_s: float


class MapColumnInfo(BaseModel):
    name: str
    kind: Literal["category", "number"]
    distinct: int
    values: list[str | float] | None = Field(
        None, description="The distinct values, when there are at most 200."
    )


class MapInfo(BaseModel):
    """What the map can show: its size, the metadata columns, which projections are ready."""

    generation: int
    points: int
    columns: list[MapColumnInfo]
    maps: dict[str, str] = Field(..., description="method -> ready, computing, missing, failed")
