"""FastAPI dependencies: the worker's state, and the API key check.

Both are ``async def`` although they do not await: FastAPI runs a plain ``def``
dependency in its thread pool, which cost more than the rest of a vector search.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Header, Request
from hear_features.api.state import ServiceState

from hear_features.errors import HearFeaturesError


class Unauthorized(HearFeaturesError):
    http_status = 401


async def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None or not state.ready:
        raise NotReady("the service is still loading its index and encoder")
    return state


class NotReady(HearFeaturesError):
    http_status = 503


async def require_api_key(
    request: Request,
    x_api_key: str | None = Header(default=None, description="The server's API key."),
) -> None:
    """Compare the key in constant time; no key configured means no check (loopback only)."""
    expected: str | None = request.app.state.settings.api_key
    if not expected:
        return
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key header")


Authorized = Depends(require_api_key)
