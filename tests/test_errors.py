"""The exception hierarchy: one module, drawn in its docstring, mapped to HTTP by the API."""

from __future__ import annotations

import inspect

import pytest
from hear_features.api.errors import status_of

from hear_features import errors


def _classes() -> list[type[errors.HearFeaturesError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if cls.__module__ == errors.__name__
    ]


def test_every_class_is_one_of_ours_and_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for cls in _classes():
        assert issubclass(cls, errors.HearFeaturesError), cls
        assert f" {cls.__name__} " in doc.replace("\n", " "), f"{cls.__name__} not drawn"


def test_the_core_carries_no_http_status() -> None:
    assert not any(hasattr(cls, "http_status") for cls in _classes())


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.ConfigError("x"), 400),
        (errors.DeviceError("x"), 400),
        (errors.InvalidRequest("x"), 422),
        (errors.FilterError("x"), 422),
        (errors.AudioError("a.wav", "x"), 422),
        (errors.SourceRefused("a.wav", "x"), 403),
        (errors.ModelAccessError("x"), 503),
        (errors.ModelMismatchError("x"), 409),
        (errors.UnknownClipError("x"), 404),
        (errors.NotReady("x"), 503),
        (errors.Unauthorized("x"), 401),
        (errors.PayloadTooLarge("x"), 413),
        (errors.Forbidden("x"), 403),
        (errors.RateLimited("x", 2.5), 429),
        (errors.Overloaded("x"), 503),
    ],
)
def test_the_api_maps_each_class_to_a_status(exc: errors.HearFeaturesError, status: int) -> None:
    assert status_of(exc) == status


def test_every_class_gets_a_client_or_unavailable_status() -> None:
    for cls in _classes():
        exc = cls("x", "y") if issubclass(cls, errors.AudioError) else cls("x")
        assert 400 <= status_of(exc) < 600 and status_of(exc) != 500
