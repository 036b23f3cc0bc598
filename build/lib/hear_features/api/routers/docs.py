"""GET /docs, /redoc, /openapi.json and the documentation pages' assets, all served by the
app itself (they work offline; nothing is fetched from a CDN).

The two pages hold no data, so they need no key; the schema they show does
(``/openapi.json`` needs a key unless ``public_docs`` is set). The pages' script asks for
the key when the schema answers 401, keeps it in ``sessionStorage`` (shared with the
explorer page) and sends it as ``X-API-Key``. Swagger UI and Redoc come from the
``fastapi-offline`` package's copy of their release files.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from hear_features.api.auth import Caller
from hear_features.api.deps import authenticate
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"
#: Swagger UI and Redoc release files, as the fastapi-offline wheel ships them.
VENDORED = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
PAGE_HEADERS = {
    # Swagger UI and Redoc set inline styles; Redoc starts a worker from a blob.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
}
ASSET_HEADERS = {"Cache-Control": "public, max-age=86400"}


@functools.cache
def _vendored(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


@functools.cache
def _own(name: str) -> bytes:
    return (STATIC / name).read_bytes()


async def schema_reader(request: Request) -> Caller | None:
    """The caller of ``/openapi.json``: anyone with ``public_docs``, else a key holder."""
    if request.app.state.settings.public_docs:
        return None
    return await authenticate(request, request.headers.get("x-api-key"))


@router.get("/openapi.json")
async def openapi(
    request: Request, _: Annotated[Caller | None, Depends(schema_reader)]
) -> JSONResponse:
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)


@router.get("/docs")
async def swagger_page() -> Response:
    return Response(_own("docs.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/redoc")
async def redoc_page() -> Response:
    return Response(_own("redoc.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> Response:
    if name == "docs.js":
        return Response(
            _own("docs.js"), media_type="text/javascript; charset=utf-8", headers=PAGE_HEADERS
        )
    if name not in VENDORED:
        raise HTTPException(404, f"no documentation asset named {name}")
    return Response(_vendored(name), media_type=VENDORED[name], headers=ASSET_HEADERS)
