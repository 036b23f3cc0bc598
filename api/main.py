"""The FastAPI application: ``create_app()`` builds it, the lifespan loads each worker.

Run it with ``hear-features serve`` (uvicorn), or as a factory:
``uvicorn --factory hear_features.api.main:create_app``.
"""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from hear_features.api import errors
from hear_features.api.limits import BodySizeLimit
from hear_features.api.metrics import Metrics, MetricsMiddleware
from hear_features.api.routers import clips, health, search, training
from hear_features.api.settings import ApiSettings
from hear_features.api.state import ServiceState

from hear_features import __version__

log = logging.getLogger(__name__)

UPLOAD_PATHS = ("/v1/search/audio",)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    # Feast's DuckDB path (through ibis) warns about a deprecated DuckDB call on every
    # training-set request; a server must not write the same line thousands of times.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis(\.|$)")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything heavy happens here, in the worker, after any fork.
        state = ServiceState(settings, metrics)
        app.state.service = state
        await state.start()
        # TensorFlow, Feast and FAISS leave hundreds of thousands of long-lived objects;
        # without this, each full garbage collection walks them all, pausing requests.
        gc.freeze()
        log.info(
            "ready: %d vectors, encoder %s",
            state.index_vectors,
            state.encoder.describe() if state.encoder else None,
        )
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="hear-features",
        version=__version__,
        description="Similarity search over HeAR embeddings of cough and breath sounds, "
        "clip look-up and point-in-time correct training sets.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    for router in (search.router, clips.router, training.router, health.router):
        app.include_router(router)

    def limit_for(path: str) -> int:
        return (
            settings.max_upload_bytes + 64 * 1024
            if path in UPLOAD_PATHS
            else settings.max_json_bytes
        )

    app.add_middleware(BodySizeLimit, limit_for=limit_for)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
