"""GET /healthz, /readyz and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from hear_features.api.models import Health, Readiness
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> JSONResponse:
    """The index and the encoder are loaded (503 until then)."""
    state = getattr(request.app.state, "service", None)
    body = Readiness(
        ready=bool(state and state.ready),
        index_vectors=state.index_vectors if state else 0,
        encoder=state.encoder.describe() if state and state.encoder else None,
        model_id=state.store_model_id if state and state.ready else None,
        detail=state.detail if state else "starting",
    )
    return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump())


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this worker."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
