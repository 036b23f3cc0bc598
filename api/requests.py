"""JSON request bodies read by pydantic-core.

FastAPI reads a JSON body with ``await request.json()`` (the standard library's
``json.loads``) and then validates the result against the route's model. For a vector
search that parse was about a tenth of the server's work per request: 512 floats as
Python text. :class:`JsonRoute` hands the routes a :class:`JsonRequest`, whose
``json()`` parses with pydantic-core (:func:`hear_features.json_text.loads`, about three
times faster here) and everything else is as before: the same model validation, the same
OpenAPI schema.

Where pydantic-core refuses a body, the standard library parses it again, so a body
the standard library reads (a lone surrogate escape, a byte-order mark) is still read,
and one it cannot read fails exactly as it did (``errors._unreadable_json`` turns those
failures into 422s that say why).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from hear_features.json_text import loads

#: Where a request keeps its parsed body (Starlette's own ``Request.json`` uses ``_json``).
_PARSED = "_json"


class JsonRequest(Request):
    """A request whose JSON body is parsed by pydantic-core (stdlib as the fallback)."""

    async def json(self) -> Any:
        if not hasattr(self, _PARSED):
            body = await self.body()
            setattr(self, _PARSED, loads(body))
        return getattr(self, _PARSED)


class JsonRoute(APIRoute):
    """An ``APIRoute`` that hands its endpoint a :class:`JsonRequest` (FastAPI's
    documented way to customise the request: ``APIRouter(route_class=JsonRoute)``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_json_request(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return with_json_request
