"""POST /v1/search/vector and /v1/search/audio."""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from hear_features.api.deps import Authorized, CallerDep, WorkerDep
from hear_features.api.models import (
    Aggregation,
    AudioSearchResponse,
    Filters,
    Neighbour,
    RecordingMatch,
    VectorSearchRequest,
    VectorSearchResponse,
    WindowResult,
    WindowStrategy,
    error_responses,
)
from hear_features.api.privacy import DisclosureDep
from hear_features.api.requests import JsonRoute
from hear_features.api.responses import ModelResponse
from hear_features.api.worker import Slot

from hear_features.audio import AudioLimits
from hear_features.audio.formats import FORMATS_IN_WORDS
from hear_features.errors import FilterError, InvalidRequest
from hear_features.featurestore.search import check_same_model
from hear_features.query import (
    AudioQuery,
    audio_query,
    best_per_recording,
    recordings_settled,
)
from hear_features.schema import EMBEDDING

router = APIRouter(
    prefix="/v1/search", tags=["search"], dependencies=[Authorized], route_class=JsonRoute
)
ERRORS = error_responses(401, 403, 404, 409, 413, 422, 429, 503)


def upload_name(filename: str | None) -> str:
    """The client's file name as errors quote it: printable, valid Unicode, at most 120
    characters (it is the client's own text, echoed back)."""
    text = (filename or "").encode("utf-8", "replace").decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else "?" for ch in text).strip()[:120]
    return text or "upload"


@router.post("/vector", response_model=VectorSearchResponse, responses=ERRORS)
async def search_vector(
    body: VectorSearchRequest, worker: WorkerDep, disclosure: DisclosureDep
) -> ModelResponse:
    """The stored clips nearest to an embedding (cosine), with the metadata the key may see."""
    disclosure.caller.check_k(body.k)
    if body.include_embedding:
        disclosure.require([EMBEDDING], "include_embedding")
    filters = None
    if body.filters is not None:
        disclosure.require_filters(body.filters.active(), worker.search.filter_fields)
        filters = body.filters.to_feast()
    # Norms checked in float64 here, not in a batch where one bad query fails the rest.
    vectors = worker.search.check_queries(np.asarray([body.vector], np.float64))
    (row,) = await worker.nearest(vectors, body.k, filters, body.include_embedding)
    results = [Neighbour.plain(m, disclosure) for m in row]
    return ModelResponse({"model_id": worker.search.model_id, "results": results})


#: Form fields of /v1/search/audio that are not filters.
FORM_FIELDS = ("file", "k", "windows", "aggregation", "filters")


@router.post("/audio", response_model=AudioSearchResponse, responses=ERRORS)
async def search_audio(
    request: Request,
    worker: WorkerDep,
    caller: CallerDep,
    disclosure: DisclosureDep,
    file: Annotated[UploadFile, File(description=FORMATS_IN_WORDS)],
    k: Annotated[int, Form(ge=1)] = 10,
    windows: Annotated[WindowStrategy, Form()] = WindowStrategy.every,
    aggregation: Annotated[Aggregation, Form()] = Aggregation.window,
    label: Annotated[list[str] | None, Form()] = None,
    subject_id: Annotated[list[str] | None, Form()] = None,
    dataset: Annotated[list[str] | None, Form()] = None,
    device: Annotated[list[str] | None, Form()] = None,
    filters: Annotated[
        str | None,
        Form(
            description="More filters as a JSON object, as in /v1/search/vector (e.g. "
            '{"age": {"gte": 40}, "covid": true}). Any other form field (a study column '
            "such as gender=f, repeatable) filters on that field too."
        ),
    ] = None,
) -> ModelResponse:
    """Embed an uploaded recording and find the stored clips most like it."""
    caller.check_k(k)
    form = await request.form()  # parsed once already: FastAPI read it for the fields
    extra = {
        name: form.getlist(name)
        for name in form.keys()  # noqa: SIM118 (a multi-dict)
        if name not in FORM_FIELDS and name not in ("label", "subject_id", "dataset", "device")
    }
    chosen = _form_filters(
        {"label": label, "subject_id": subject_id, "dataset": dataset, "device": device},
        extra,
        filters,
    )
    try:
        disclosure.require_filters(chosen.active(), worker.search.filter_fields)
    except FilterError as exc:
        if not extra:
            raise
        # A misspelt option (window=, top_k=) arrives as a filter on a study column.
        raise FilterError(
            f"{exc}; this endpoint's own form fields are {', '.join(FORM_FIELDS)}"
        ) from None
    feast_filters = worker.search.check_filters(chosen.to_feast())  # 422 before decoding
    uploads = form.getlist("file")
    if len(uploads) > 1:
        raise InvalidRequest(f"send one file per request; this one has {len(uploads)}")
    encoder, batcher = worker.require_encoder()
    if worker.index_vectors:
        check_same_model(worker.search.model_id, encoder.model_id)
    data = await file.read()
    name = upload_name(file.filename)
    settings = worker.settings
    limits = AudioLimits(
        max_duration_s=settings.max_audio_s,
        max_decoded_samples=int(settings.max_decoded_msamples * 1e6),
        max_decode_s=settings.time_budget_s,
    )

    def cut() -> AudioQuery:
        buffer = io.BytesIO(data)
        buffer.name = name
        strongest = windows is WindowStrategy.strongest
        return audio_query(buffer, name=name, strongest=strongest, limits=limits)

    query = await worker.run(cut, slot=Slot.upload)
    vectors = await batcher.encode(query.clips)
    per_window = await worker.nearest(vectors, k, feast_filters)
    body = AudioSearchResponse(model_id=encoder.model_id, aggregation=aggregation)
    if aggregation is Aggregation.window:
        body.windows = [
            WindowResult(offset_s=offset, results=[Neighbour.of(m, disclosure) for m in row])
            for offset, row in zip(query.offsets, per_window, strict=True)
        ]
    else:
        # k recordings, not the recordings among k clips: search deeper until settled,
        # at most max_k clips per window.
        depth, deepest = k, max(k, settings.max_k)
        ranked = best_per_recording(query.offsets, per_window, k)
        while depth < deepest and not recordings_settled(per_window, depth, ranked, k):
            depth = min(depth * 4, deepest)
            per_window = await worker.nearest(vectors, depth, feast_filters)
            ranked = best_per_recording(query.offsets, per_window, k)
        body.recordings = [RecordingMatch.of(hit, disclosure) for hit in ranked]
    return ModelResponse(body)


def _form_filters(
    named: dict[str, list[str] | None], extra: dict[str, list[Any]], raw: str | None
) -> Filters:
    """The filters of a multipart search: the named fields, any other field by name,
    and the ``filters`` JSON object (422 for malformed JSON or values)."""
    fields: dict[str, Any] = {k: v for k, v in named.items() if v is not None}
    fields.update({k: [str(v) for v in values] for k, values in extra.items()})
    if raw:
        try:
            given = json.loads(raw)
        except ValueError as exc:
            raise InvalidRequest(f"form field 'filters' is not JSON: {exc}") from None
        if not isinstance(given, dict):
            raise InvalidRequest("form field 'filters' must be a JSON object")
        twice = sorted(set(given) & set(fields))
        if twice:
            raise InvalidRequest(f"filter field {twice[0]!r} is given twice")
        fields.update(given)
    return Filters.from_fields("body", fields)
