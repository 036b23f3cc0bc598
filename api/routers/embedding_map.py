"""GET /v1/map and /v1/map/info: a 2-D map of every stored embedding, with metadata.

The map is computed server-side once per state of the store and cached (see
:mod:`hear_features.explorer.embedding_map`). PCA is computed on the first request;
UMAP runs in the background, and until it is ready the route answers 202 with
``Retry-After``. Points come in pages (``offset``, ``limit``) as parallel arrays.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from hear_features.api.deps import Authorized
from hear_features.api.explorer_state import ExplorerDep
from hear_features.api.models import (
    EmbeddingMapPage,
    MapInfo,
    MapPending,
    error_responses,
    unicode_text,
)
from hear_features.api.privacy import DisclosureDep
from hear_features.api.requests import JsonRoute
from hear_features.api.responses import ModelResponse

from hear_features.errors import InvalidRequest, MapError
from hear_features.explorer.embedding_map import MapMethod

router = APIRouter(prefix="/v1/map", tags=["map"], dependencies=[Authorized], route_class=JsonRoute)
ERRORS = error_responses(401, 403, 422, 429, 503)
MAX_PAGE = 1_000_000
MAX_COLUMNS = 20
NO_STORE = {"Cache-Control": "no-store"}


@router.get(
    "",
    response_model=EmbeddingMapPage,
    responses={**ERRORS, 202: {"model": MapPending, "description": "Being computed."}},
)
async def embedding_map(
    explorer: ExplorerDep,
    disclosure: DisclosureDep,
    method: Annotated[MapMethod, Query(description="pca (on request) or umap (background)")] = (
        MapMethod.pca
    ),
    columns: Annotated[
        list[str] | None,
        Query(description="Metadata columns to include (repeat, or comma-separated)."),
    ] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200_000,
) -> ModelResponse | JSONResponse:
    """Coordinates in [0, 1], clip ids and the requested metadata of the stored clips."""
    names = [c.strip() for raw in columns or [] for c in raw.split(",") if c.strip()]
    names = list(dict.fromkeys(names))
    if len(names) > MAX_COLUMNS:
        raise InvalidRequest(f"at most {MAX_COLUMNS} map columns at once, got {len(names)}")
    for name in names:
        try:
            unicode_text(name)
        except ValueError as exc:
            raise InvalidRequest(f"columns: {exc}") from None
    if names:
        info = await explorer.worker.run(explorer.info)
        known = {column.name for column in info.columns}
        unknown = [name for name in names if name not in known]
        if unknown:  # named among the columns this key may see, never the others
            visible = sorted(name for name in known if disclosure.may_show(name))
            raise MapError(
                f"unknown map column(s) {', '.join(unknown)}; known: {', '.join(visible)}"
            )
        disclosure.require(names, "a map column")
    page = await explorer.worker.run(explorer.page, method, names, offset, limit)
    if isinstance(page, MapPending):
        return JSONResponse(
            page.model_dump(),
            status_code=202,
            headers={"Retry-After": str(round(page.retry_after_s)), **NO_STORE},
        )
    return ModelResponse(page, headers=NO_STORE)


@router.get("/info", response_model=MapInfo, responses=ERRORS)
async def map_info(explorer: ExplorerDep, disclosure: DisclosureDep) -> MapInfo:
    """The map's size, the metadata columns this key may see (with their values when few)
    and which projections are ready."""
    info = await explorer.worker.run(explorer.info)
    shown = [column for column in info.columns if disclosure.may_show(column.name)]
    return info.model_copy(update={"columns": shown})
