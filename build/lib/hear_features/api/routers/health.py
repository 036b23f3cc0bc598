"""GET /healthz and /readyz (probes: up / ready, nothing more), /v1/status (what is loaded,
for key holders) and /metrics (Prometheus, for key holders unless ``public_metrics``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from hear_features.api.auth import Caller
from hear_features.api.deps import Authorized, authenticate
from hear_features.api.models import Health, Readiness, ServiceStatus, error_responses
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> JSONResponse:
    """The index and the encoder are loaded (503 until then). Says nothing else: probes
    need no key, so what is loaded is told only to key holders (``/v1/status``)."""
    worker = getattr(request.app.state, "worker", None)
    ready = bool(worker and worker.ready)
    return JSONResponse(status_code=200 if ready else 503, content={"ready": ready})


@router.get(
    "/v1/status",
    response_model=ServiceStatus,
    responses=error_responses(401, 429),
    dependencies=[Authorized],
)
async def status(request: Request) -> ServiceStatus:
    """What this worker has loaded: vectors in the index, the encoder and its model."""
    worker = getattr(request.app.state, "worker", None)
    ready = bool(worker and worker.ready)
    return ServiceStatus(
        ready=ready,
        index_vectors=worker.index_vectors if worker else 0,
        encoder=worker.encoder.describe() if worker and worker.encoder else None,
        model_id=worker.search.model_id if worker and ready else None,
        detail=worker.detail if worker else "starting",
    )


async def metrics_reader(request: Request) -> Caller | None:
    """The caller of ``/metrics``: anyone with ``public_metrics``, else a key holder."""
    if request.app.state.settings.public_metrics:
        return None
    return await authenticate(request, request.headers.get("x-api-key"))


@router.get("/metrics", response_class=Response, responses=error_responses(401, 429))
async def metrics(
    request: Request, _: Annotated[Caller | None, Depends(metrics_reader)]
) -> Response:
    """Prometheus metrics of this worker (a key is needed unless ``public_metrics``)."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
