"""The edge of the app: which Host names it answers, and the headers every response has.

- :class:`TrustedHosts`: Starlette's ``TrustedHostMiddleware`` with a JSON error body. A
  server bound to a loopback address answers only ``localhost``, ``127.0.0.1`` and
  ``::1`` (plus ``allowed_hosts``): a web page that re-binds its own DNS name to
  127.0.0.1 (DNS rebinding) cannot reach a key-less local server from a browser. On other
  addresses the reverse proxy in front decides, unless ``allowed_hosts`` is given.
- :class:`SecurityHeaders`: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer`` and ``X-Frame-Options: DENY`` everywhere; ``Cache-Control: no-store``
  on every response that does not set its own (data must not linger in caches).
- CORS is added (:func:`install`) only when ``cors_origins`` lists origins; a refused
  preflight is answered in JSON (:class:`Cors`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi import FastAPI
from hear_features.api.asgi import HttpMiddleware
from hear_features.api.errors import error_body
from hear_features.api.settings import ApiSettings, is_loopback
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Names of this machine that a loopback server always answers to.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
#: Headers on every response.
ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
PASSED = "hear_features.host_ok"


class _MarkPassed:
    """Notes in the scope that the host check let the request through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[PASSED] = True
        await self.app(scope, receive, send)


class TrustedHosts(TrustedHostMiddleware):
    """Starlette's host check; its refusal is answered as ``{"error": ...}`` JSON (400)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        super().__init__(_MarkPassed(app), allowed_hosts=allowed_hosts, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        replaced = False

        async def json_refusal(message: Message) -> None:
            nonlocal replaced
            if scope.get(PASSED):
                await send(message)
                return
            if message["type"] == "http.response.start" and not replaced:
                replaced = True
                body = json.dumps(
                    error_body(
                        "InvalidHost",
                        "this server does not answer to the Host in the request; "
                        "add the name to HEAR_API_ALLOWED_HOSTS if it is yours",
                    )
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})

        await super().__call__(scope, receive, json_refusal)


class SecurityHeaders(HttpMiddleware):
    """Adds :data:`ALWAYS`, and ``Cache-Control: no-store`` where none is set."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in ALWAYS if n not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class Cors(CORSMiddleware):
    """Starlette's CORS; a refused preflight is answered in JSON, like every refusal."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        why = bytes(response.body).decode("utf-8", "replace")  # "Disallowed CORS origin, ..."
        headers = {
            k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
        }
        return JSONResponse(
            error_body("CorsRefused", f"cross-origin request refused: {why}"),
            status_code=response.status_code,
            headers=headers,
        )


def allowed_hosts(settings: ApiSettings) -> list[str] | None:
    """The Host names to answer (None: any)."""
    if is_loopback(settings.host):
        return [*LOCAL_HOSTS, *settings.allowed_hosts]
    return list(settings.allowed_hosts) or None


def install(app: FastAPI, settings: ApiSettings) -> None:
    """Add the edge middleware (outermost last): CORS when configured, hosts, headers."""
    if settings.cors_origins:
        app.add_middleware(
            Cors,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type", "Accept"],
            max_age=600,
        )
    hosts = allowed_hosts(settings)
    if hosts is not None:
        app.add_middleware(TrustedHosts, allowed_hosts=hosts)
    app.add_middleware(SecurityHeaders)
