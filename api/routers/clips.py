"""GET /v1/clips/{clip_id} and /v1/clips/{clip_id}/similar."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from hear_features.api.dependencies import Authorized, get_state
from hear_features.api.models import ClipResponse, SimilarResponse, error_responses
from hear_features.api.responses import ModelResponse
from hear_features.api.state import ServiceState

router = APIRouter(prefix="/v1/clips", tags=["clips"], dependencies=[Authorized])
ERRORS = error_responses(401, 404, 422, 503)


@router.get("/{clip_id}", response_model=ClipResponse, responses=ERRORS)
async def get_clip(
    clip_id: str,
    state: Annotated[ServiceState, Depends(get_state)],
    include_embedding: Annotated[bool, Query()] = False,
) -> ClipResponse:
    """A stored clip's metadata (and its embedding on request)."""
    return await state.clip(clip_id, include_embedding)


@router.get("/{clip_id}/similar", response_model=SimilarResponse, responses=ERRORS)
async def similar(
    clip_id: str,
    state: Annotated[ServiceState, Depends(get_state)],
    k: Annotated[int, Query(ge=1)] = 10,
) -> ModelResponse:
    """The stored clips nearest to a stored clip (itself excluded)."""
    results = await state.similar_to_clip(clip_id, k)
    return ModelResponse(
        SimilarResponse(clip_id=clip_id, model_id=state.store_model_id, results=results)
    )
