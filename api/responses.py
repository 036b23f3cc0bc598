"""Responses for the hot routes: a pydantic model, or its JSON object in plain values,
rendered once by pydantic-core.

FastAPI re-validates a route's return value against its ``response_model`` (dumping it
to a dict and validating that again) before encoding it. For the search routes that
work is a large share of a request, and the models were built from our own store's
values; a route returns :class:`ModelResponse` instead, and keeps ``response_model`` in
its decorator for the OpenAPI schema. Models built with ``model_construct`` from what a
caller may see leave the rest unset, and unset fields are left out; plain values (the
hits of a search, :meth:`~hear_features.api.models.Neighbour.plain`) hold only what the
caller may see. Either way a non-finite float is written as ``null``, as pydantic does.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic import BaseModel
from starlette.responses import Response


class ModelResponse(Response):
    """A model as JSON, without the fields that were never set: a field the caller may
    not see (:mod:`hear_features.api.privacy`) is absent, not null; or a model's JSON
    object given as plain values (dicts, lists, strings, numbers, datetimes). Data is not
    cached."""

    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200, headers: Any = None) -> None:
        super().__init__(content, status_code, {"Cache-Control": "no-store", **(headers or {})})

    def render(self, content: Any) -> bytes | memoryview:
        if isinstance(content, BaseModel):
            return content.model_dump_json(exclude_unset=True).encode()
        if isinstance(content, bytes | memoryview):
            return content
        return pydantic_core.to_json(content, inf_nan_mode="null")
