"""POST /v1/search/vector and /v1/search/audio."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile
from hear_features.api.dependencies import Authorized, get_state
from hear_features.api.models import (
    Aggregation,
    AudioSearchResponse,
    Filters,
    VectorSearchRequest,
    VectorSearchResponse,
    WindowStrategy,
    error_responses,
)
from hear_features.api.responses import ModelResponse
from hear_features.api.state import ServiceState

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[Authorized])
ERRORS = error_responses(401, 404, 409, 413, 422, 503)


@router.post("/vector", response_model=VectorSearchResponse, responses=ERRORS)
async def search_vector(
    body: VectorSearchRequest, state: Annotated[ServiceState, Depends(get_state)]
) -> ModelResponse:
    """The stored clips nearest to an embedding (cosine), with their metadata."""
    (results,) = await state.search(
        np.asarray([body.vector], np.float32), body.k, body.filters, body.include_embedding
    )
    return ModelResponse(VectorSearchResponse(model_id=state.store_model_id, results=results))


@router.post("/audio", response_model=AudioSearchResponse, responses=ERRORS)
async def search_audio(
    state: Annotated[ServiceState, Depends(get_state)],
    file: Annotated[UploadFile, File(description="WAV, FLAC, OGG or MP3")],
    k: Annotated[int, Form(ge=1)] = 10,
    windows: Annotated[WindowStrategy, Form()] = WindowStrategy.every,
    aggregation: Annotated[Aggregation, Form()] = Aggregation.window,
    label: Annotated[list[str] | None, Form()] = None,
    subject_id: Annotated[list[str] | None, Form()] = None,
    dataset: Annotated[list[str] | None, Form()] = None,
    device: Annotated[list[str] | None, Form()] = None,
) -> ModelResponse:
    """Embed an uploaded recording and find the stored clips most like it."""
    data = await file.read()
    filters = Filters(label=label, subject_id=subject_id, dataset=dataset, device=device)
    per_window, recordings = await state.search_audio(
        data,
        file.filename or "upload",
        k,
        filters if filters.active() else None,
        windows,
        aggregation,
    )
    assert state.encoder is not None
    return ModelResponse(
        AudioSearchResponse(
            model_id=state.encoder.model_id,
            aggregation=aggregation,
            windows=per_window,
            recordings=recordings,
        )
    )
