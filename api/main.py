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
from hear_features.api import edge, errors
from hear_features.api.auth import KeyRing, RateLimiter
from hear_features.api.balance import claim_slot
from hear_features.api.limits import BodySizeLimit
from hear_features.api.metrics import Metrics, MetricsMiddleware
from hear_features.api.routers import (
    clip_media,
    clips,
    docs,
    embedding_map,
    explorer,
    forget,
    health,
    search,
    training,
)
from hear_features.api.settings import ApiSettings
from hear_features.api.worker import Worker

from hear_features import __version__

log = logging.getLogger(__name__)

UPLOAD_PATHS = ("/v1/search/audio",)
#: The garbage collector's thresholds while a worker serves (generation 0, 1, 2).
GC_THRESHOLDS = (50_000, 20, 10)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    # Feast's DuckDB path (through ibis) warns about a deprecated DuckDB call on every
    # training-set request; a server must not write the same line thousands of times.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis(\.|$)")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything heavy happens here, in the worker, after any fork.
        claim_slot()  # this worker's place in the connection table (api.balance)
        worker = Worker(settings, metrics)
        app.state.worker = worker
        await worker.start()
        # TensorFlow, Feast and FAISS leave hundreds of thousands of long-lived objects;
        # without this, each full garbage collection walks them all, pausing requests.
        gc.freeze()
        # A request allocates a few hundred container objects, most gone when it ends; at
        # the default threshold (700) the youngest generation was collected every couple
        # of requests, walking the objects of every request in flight each time. Measured
        # at 16 clients: about 7% of a worker's CPU (BENCHMARKS.md, the API at 16 clients).
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info(
            "ready: %d vectors, encoder %s",
            worker.index_vectors,
            worker.encoder.describe() if worker.encoder else None,
        )
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            await worker.stop()

    app = FastAPI(
        title="hear-features",
        version=__version__,
        description="Similarity search over HeAR embeddings of cough and breath sounds, "
        "clip look-up and point-in-time correct training sets.",
        lifespan=lifespan,
        # Served by routers.docs: offline assets, and the schema only to key holders.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.keys = KeyRing.from_settings(settings)
    app.state.rate_limiter = RateLimiter()
    errors.install(app)
    for router in (
        search.router,
        clips.router,
        clip_media.router,
        embedding_map.router,
        training.router,
        forget.router,
        health.router,
        explorer.router,
        docs.router,
    ):
        app.include_router(router)

    def limit_for(path: str) -> int:
        return settings.max_upload_bytes if path in UPLOAD_PATHS else settings.max_json_bytes

    app.add_middleware(BodySizeLimit, limit_for=limit_for)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    edge.install(app, settings)
    return app
