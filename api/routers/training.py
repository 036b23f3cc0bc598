"""POST /v1/training-set: point-in-time correct rows, as JSON or Parquet."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Header
from fastapi.responses import Response
from hear_features.api.dependencies import Authorized, get_state
from hear_features.api.errors import InvalidRequest
from hear_features.api.models import TrainingSetRequest, TrainingSetResponse, error_responses
from hear_features.api.state import ServiceState

from hear_features.featurestore.training import write_training_set

router = APIRouter(prefix="/v1", tags=["training"], dependencies=[Authorized])
PARQUET = "application/vnd.apache.parquet"
ERRORS = error_responses(401, 404, 422, 503)


@router.post(
    "/training-set",
    response_model=TrainingSetResponse,
    responses={**ERRORS, 200: {"content": {PARQUET: {}}}},
)
async def training_set(
    body: TrainingSetRequest,
    state: Annotated[ServiceState, Depends(get_state)],
    accept: Annotated[str | None, Header()] = None,
) -> Response | TrainingSetResponse:
    """Entity rows (clip ids + timestamps) -> the features valid at each timestamp; or
    seed clips + k -> their nearest stored clips with provenance. ``Accept:
    application/vnd.apache.parquet`` returns a Parquet file instead of JSON."""
    if (body.entities is None) == (body.seeds is None):
        raise InvalidRequest("give either 'entities' or 'seeds'")
    entities = None
    if body.entities is not None:
        if not body.entities:
            raise InvalidRequest("'entities' is empty")
        entities = pd.DataFrame([row.model_dump() for row in body.entities])
    elif not body.seeds:
        raise InvalidRequest("'seeds' is empty")
    frame = await state.training_rows(entities, body.seeds, body.k)
    if accept and PARQUET in accept:
        return Response(content=_parquet(frame), media_type=PARQUET)
    return TrainingSetResponse(rows=[_jsonable(row) for row in frame.to_dict("records")])


def _parquet(frame: pd.DataFrame) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "training.parquet"
        write_training_set(frame, path)
        return path.read_bytes()


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, pd.Timestamp):
            value = value.isoformat()
        elif (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
            value = None
        out[key] = value
    return out
