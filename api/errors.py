"""Every error becomes a JSON body with a 4xx status; nothing a client sends yields a
stack trace. The body is ``{"error": {"type": ..., "message": ...}}``.

The core's exceptions (:mod:`hear_features.errors`) know nothing of HTTP: :data:`STATUS`
is the one table that gives each class its status code. A class not in it takes the
status of its nearest listed base class; any other :class:`HearFeaturesError` is a 400.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from hear_features.api.asgi import HttpMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from hear_features.errors import (
    AudioError,
    FilterError,
    Forbidden,
    HearFeaturesError,
    IndexLoadError,
    InputShapeError,
    InvalidRequest,
    LockTimeout,
    MapComputationFailed,
    MapError,
    ModelError,
    ModelMismatchError,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    SourceChangedError,
    SourceMovedError,
    SourceRefused,
    TimestampError,
    Unauthorized,
    UnknownClipError,
)

log = logging.getLogger(__name__)

STATUS: dict[type[HearFeaturesError], int] = {
    HearFeaturesError: 400,
    Unauthorized: 401,
    Forbidden: 403,
    SourceRefused: 403,
    UnknownClipError: 404,
    ModelMismatchError: 409,
    LockTimeout: 409,
    SourceChangedError: 409,
    SourceMovedError: 410,
    PayloadTooLarge: 413,
    AudioError: 422,
    FilterError: 422,
    InputShapeError: 422,
    InvalidRequest: 422,
    MapError: 422,
    TimestampError: 422,
    RateLimited: 429,
    ModelError: 503,
    IndexLoadError: 503,
    NotReady: 503,
    MapComputationFailed: 503,
    Overloaded: 503,
}


def status_of(exc: HearFeaturesError) -> int:
    """The HTTP status for ``exc``: its own class's, else its nearest listed base's."""
    return next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(kind, message), headers=headers)


def public_message(exc: HearFeaturesError, places: Sequence[tuple[str, str]] = ()) -> str:
    """The message a client gets, without server paths: an audio error about a file on this
    server (a registered recording) names it as "the clip's recording" (and the file a
    link of it resolves to as "a server path"); each ``(location, name)`` of ``places``
    (the feature repository, the audio roots; :func:`server_places`) is named by what it
    is, longest location first."""
    message = str(exc)
    if isinstance(exc, AudioError) and _server_path(exc.source):
        local = exc.source.removeprefix("file://")
        message = message.replace(exc.source, "the clip's recording")
        places = [*places, (os.path.realpath(local), "a server path")]
    for place, name in sorted(places, key=lambda p: len(p[0]), reverse=True):
        if len(place) > 1:
            message = message.replace(place, name)
    return message


def server_places(app: Any) -> list[tuple[str, str]]:
    """Server locations an error message may hold, and the words that replace them."""
    worker = getattr(app.state, "worker", None)
    if worker is None:
        return []
    try:
        places = [(str(root), "an audio root") for root in worker.audio_roots]
        repo = getattr(worker.store, "repo_path", None)
        if repo is not None:
            for form in (Path(repo), Path(repo).resolve()):
                places.append((str(form), "the feature repository"))
    except Exception:  # an error answer must not fail itself
        log.exception("could not list the server's locations for an error message")
        return []
    return places


def _server_path(source: str) -> bool:
    return source.startswith("file:") or PurePath(source).is_absolute()


def headers_of(exc: HearFeaturesError) -> dict[str, str] | None:
    """Headers an error answer carries: ``Retry-After`` (whole seconds) on a 429 and on a
    503 for a busy server."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if isinstance(exc, Overloaded):
        return {"Retry-After": "1"}
    return None


#: Validation problems named in one 422 answer; the rest are counted.
MAX_LISTED = 5


def _where(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"


def _problem(err: dict[str, Any]) -> str:
    """One validation problem in words; FastAPI's bad JSON is "JSON decode error" at a
    character offset, so the parser's own reason is added."""
    if err.get("type") == "json_invalid":
        at = err.get("loc", ("body", "?"))[-1]
        why = (err.get("ctx") or {}).get("error", "")
        return f"body: not valid JSON at character {at}" + (f": {why}" if why else "")
    return f"{_where(err)}: {err.get('msg')}"


def _unreadable_json(exc: StarletteHTTPException) -> str | None:
    """Why a JSON body could not be parsed, when FastAPI says only "There was an error
    parsing the body" (400): nesting past Python's recursion limit, a number of more than
    4300 digits, bytes that are not UTF-8. None for any other HTTP error."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return "JSON nested too deeply to read"
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 text (byte {cause.start} is invalid)"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in the JSON has more than 4300 digits"
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(HearFeaturesError)
    async def _ours(request: Request, exc: HearFeaturesError) -> JSONResponse:
        message = public_message(exc, server_places(request.app))
        return error_response(status_of(exc), type(exc).__name__, message, headers_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        problems = "; ".join(_problem(err) for err in errors[:MAX_LISTED])
        if len(errors) > MAX_LISTED:  # 512 NaNs are one problem, said five times at most
            problems += f"; and {len(errors) - MAX_LISTED} more"
        return error_response(422, "ValidationError", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unreadable = _unreadable_json(exc)
        if unreadable is not None:
            return error_response(422, "ValidationError", f"body: {unreadable}")
        return error_response(exc.status_code, "HTTPError", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours in a middleware (route errors stop at LastResort): answer in JSON.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _internal_error()

    app.add_middleware(LastResort)


def _internal_error() -> JSONResponse:
    return error_response(500, "InternalError", "internal error; the server log has details")


class LastResort(HttpMiddleware):
    """Answers an exception no handler took (a bug of ours, not the client's) with a JSON
    500 and logs its traceback once. Starlette's own last resort answers, then raises the
    exception again: uvicorn logged the traceback a second time and closed the
    connection. This middleware sits inside that one, around the routes."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:  # too late to answer: the connection must end
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await _internal_error()(scope, receive, send)
