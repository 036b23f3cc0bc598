"""Responses for the hot routes: a pydantic model rendered once, by pydantic-core.

FastAPI re-validates a route's return value against its ``response_model`` (dumping it
to a dict and validating that again) before encoding it. For the search routes that
work is a large share of a request, and the models were built from our own store's
values; a route returns :class:`ModelResponse` instead, and keeps ``response_model`` in
its decorator for the OpenAPI schema. Models built with ``model_construct`` from what a
caller may see leave the rest unset, and unset fields are left out.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.responses import Response


class ModelResponse(Response):
    """A model as JSON, without the fields that were never set: a field the caller may
    not see (:mod:`hear_features.api.privacy`) is absent, not null. Data is not cached."""

    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200, headers: Any = None) -> None:
        super().__init__(content, status_code, {"Cache-Control": "no-store", **(headers or {})})

    def render(self, content: Any) -> bytes | memoryview:
        if isinstance(content, BaseModel):
            return content.model_dump_json(exclude_unset=True).encode()
        return super().render(content)
