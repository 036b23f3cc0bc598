"""Responses for the hot routes: a pydantic model rendered once, by pydantic-core.

FastAPI re-validates a route's return value against its ``response_model`` (dumping it
to a dict and validating that again) before encoding it. For the search routes that
work is a large share of a request, and the models were built from our own store's
values; a route returns :class:`ModelResponse` instead, and keeps ``response_model`` in
its decorator for the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.responses import Response


class ModelResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes | memoryview:
        if isinstance(content, BaseModel):
            return content.model_dump_json().encode()
        return super().render(content)
