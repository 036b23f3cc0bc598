"""Health, readiness and status answers, and the JSON body of every error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool


class ServiceStatus(BaseModel):
    ready: bool
    index_vectors: int
    encoder: str | None
    model_id: str | None
    detail: str | None = None


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    return {code: {"model": ErrorResponse} for code in codes}
