"""POST /v1/training-set: point-in-time correct rows, as JSON or Parquet."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Header
from fastapi.responses import Response
from hear_features.api.deps import Authorized, CallerDep, WorkerDep
from hear_features.api.models import TrainingSetRequest, TrainingSetResponse, error_responses
from hear_features.api.privacy import DisclosureDep
from hear_features.api.requests import JsonRoute
from hear_features.api.worker import Slot

from hear_features.errors import InvalidRequest
from hear_features.featurestore.training import more_like_these, write_training_set
from hear_features.featurestore.training import training_set as build_training_set

router = APIRouter(
    prefix="/v1", tags=["training"], dependencies=[Authorized], route_class=JsonRoute
)
PARQUET = "application/vnd.apache.parquet"
ERRORS = error_responses(401, 403, 404, 422, 429, 503)
#: Response header listing the columns left out for this key (Parquet answers).
HIDDEN_HEADER = "X-Hidden-Columns"


@router.post(
    "/training-set",
    response_model=TrainingSetResponse,
    responses={**ERRORS, 200: {"content": {PARQUET: {}}}},
)
async def training_set(
    body: TrainingSetRequest,
    worker: WorkerDep,
    caller: CallerDep,
    disclosure: DisclosureDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Entity rows (clip ids + timestamps) -> the features valid at each timestamp; or
    seed clips + k -> their nearest stored clips with provenance. ``Accept:
    application/vnd.apache.parquet`` returns a Parquet file instead of JSON.

    Identical entity rows and repeated seeds are served once. Columns the key may not see
    are left out and listed in ``hidden_columns`` (the ``X-Hidden-Columns`` header for
    Parquet)."""
    if (body.entities is None) == (body.seeds is None):
        raise InvalidRequest("give either 'entities' or 'seeds'")
    if body.entities is not None and not body.entities:
        raise InvalidRequest("'entities' is empty")
    seeds = list(dict.fromkeys(body.seeds or []))
    if body.seeds is not None:
        if not seeds:
            raise InvalidRequest("'seeds' is empty")
        caller.check_k(body.k)
        caller.check_rows(len(seeds) * body.k, f"{len(seeds)} distinct seeds x k={body.k}")
    own_columns = body.extra_columns()
    as_parquet = bool(accept and PARQUET in accept)

    def build() -> tuple[bytes, list[str]]:
        # Everything in the work thread, the answer encoded too: a large training set
        # must not hold up the event loop (and with it every look-up) while it is built.
        entities = None
        if body.entities is not None:
            entities = pd.DataFrame([row.model_dump() for row in body.entities])
            entities = entities.drop_duplicates(ignore_index=True)
            caller.check_rows(len(entities), f"{len(entities)} distinct entity rows")
        with worker.feast_lock:
            if entities is not None:
                stored = build_training_set(worker.store, entities)
            else:
                stored = more_like_these(
                    worker.store, seed_ids=seeds, k=body.k, search=worker.search
                )
        frame, hidden = disclosure.with_own(own_columns, stored.columns).frame(stored)
        if as_parquet:
            return _parquet(frame), hidden
        rows = [_jsonable(row) for row in frame.to_dict("records")]
        answer = TrainingSetResponse(rows=rows, hidden_columns=hidden)
        return answer.model_dump_json().encode(), hidden

    content, hidden = await worker.run(build, slot=Slot.training)
    if as_parquet:
        return Response(
            content=content,
            media_type=PARQUET,
            headers={HIDDEN_HEADER: ",".join(hidden), "Cache-Control": "no-store"},
        )
    return Response(content, media_type="application/json", headers={"Cache-Control": "no-store"})


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
