"""GET /explorer: the explorer page and its two assets, served by the app itself.

The page holds no data, so it needs no key: it asks for the API key when the server has
one, keeps it in the browser's ``sessionStorage`` and sends it as ``X-API-Key`` with
every data request (audio and pictures too, fetched as blobs). Nothing is loaded from
anywhere else; the Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(tags=["explorer"], include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("/explorer")
async def explorer_page() -> Response:
    """Upload, record or name a clip; hear and see its neighbours; map and export."""
    return Response(_read("explorer.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/explorer/explorer.js")
async def explorer_script() -> Response:
    return Response(_read("explorer.js"), media_type=ASSETS["explorer.js"], headers=HEADERS)


@router.get("/explorer/explorer.css")
async def explorer_style() -> Response:
    return Response(_read("explorer.css"), media_type=ASSETS["explorer.css"], headers=HEADERS)
