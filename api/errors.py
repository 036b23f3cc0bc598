"""Every error becomes a JSON body with a 4xx status; nothing a client sends yields a
stack trace. The body is ``{"error": {"type": ..., "message": ...}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hear_features.errors import HearFeaturesError

log = logging.getLogger(__name__)


class InvalidRequest(HearFeaturesError):
    """A request that parses but does not make sense (e.g. neither entities nor seeds)."""

    http_status = 422


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message}})


def _where(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(HearFeaturesError)
    async def _ours(request: Request, exc: HearFeaturesError) -> JSONResponse:
        return error_response(exc.http_status, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{_where(err)}: {err.get('msg')}" for err in exc.errors())
        return error_response(422, "ValidationError", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "HTTPError", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours, not the client's: log it, and still answer in JSON.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "InternalError", "internal error; the server log has details")
