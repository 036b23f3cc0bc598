"""GET /v1/clips/{clip_id} and /v1/clips/{clip_id}/similar."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from hear_features.api.deps import Authorized, CallerDep, FilterQuery, WorkerDep
from hear_features.api.models import ClipResponse, Neighbour, SimilarResponse, error_responses
from hear_features.api.privacy import DisclosureDep
from hear_features.api.requests import JsonRoute
from hear_features.api.responses import ModelResponse

from hear_features.errors import UnknownClipError
from hear_features.schema import EMBEDDING

router = APIRouter(
    prefix="/v1/clips", tags=["clips"], dependencies=[Authorized], route_class=JsonRoute
)
ERRORS = error_responses(401, 403, 404, 422, 429, 503)


@router.get("/{clip_id}", response_model=ClipResponse, responses=ERRORS)
async def get_clip(
    clip_id: str,
    worker: WorkerDep,
    disclosure: DisclosureDep,
    include_embedding: Annotated[
        bool, Query(description="Add the vector (keys that may see embeddings).")
    ] = False,
) -> ModelResponse:
    """A stored clip's metadata (and its embedding on request), as far as the key may see."""
    if include_embedding:
        disclosure.require([EMBEDDING], "include_embedding")
    (clip,) = await worker.run(worker.search.clips, [clip_id])
    if clip is None:
        raise UnknownClipError(f"unknown clip id: {clip_id}")
    fields = dict(clip.features)
    if not include_embedding:
        fields.pop(EMBEDDING, None)
    return ModelResponse(
        ClipResponse.model_construct(
            clip_id=clip_id, event_timestamp=clip.event_timestamp, **disclosure.fields(fields)
        )
    )


@router.get("/{clip_id}/similar", response_model=SimilarResponse, responses=ERRORS)
async def similar(
    clip_id: str,
    worker: WorkerDep,
    caller: CallerDep,
    disclosure: DisclosureDep,
    filters: FilterQuery,
    k: Annotated[int, Query(ge=1)] = 10,
) -> ModelResponse:
    """The stored clips nearest to a stored clip (itself excluded), optionally only those
    whose metadata match the filters."""
    caller.check_k(k)
    disclosure.require_filters(filters.active(), worker.search.filter_fields)
    vectors = await worker.run(worker.search.vectors_of, [clip_id])
    (row,) = await worker.nearest(vectors, k + 1, filters.to_feast())
    results = [Neighbour.plain(m, disclosure) for m in row if m.clip_id != clip_id][:k]
    return ModelResponse(
        {"clip_id": clip_id, "model_id": worker.search.model_id, "results": results}
    )
