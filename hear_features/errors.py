"""The one exception hierarchy of hear-features.

Every error a user can cause derives from :class:`HearFeaturesError`, so the CLI can
print it as one line and the API can map it to a 4xx JSON body without ever showing a
stack trace. Errors that are our own bugs stay ordinary Python exceptions.
"""

from __future__ import annotations

from pathlib import Path


class HearFeaturesError(Exception):
    """Base class: something the user can fix, described in plain words."""

    #: HTTP status the API answers with when this error reaches it.
    http_status: int = 400


class ConfigError(HearFeaturesError):
    """A setting, flag or configuration file is malformed or inconsistent."""


class AudioError(HearFeaturesError):
    """An audio file or buffer cannot be used; names the source and the problem."""

    http_status = 422

    def __init__(self, source: str | Path, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class ModelError(HearFeaturesError):
    """The encoder model cannot be found, downloaded or used."""

    http_status = 503


class ModelNotFoundError(ModelError):
    """No model at the given location (local directory, hub repository or cache)."""


class ModelAccessError(ModelError):
    """The hub refused access (gated or private repository, missing or bad token)."""


class InvalidModelError(ModelError):
    """A directory exists but does not hold a HeAR-compatible SavedModel."""


class InputShapeError(HearFeaturesError):
    """An array given to the encoder or the index has the wrong shape, dtype or values."""

    http_status = 422


class DeviceError(HearFeaturesError):
    """A GPU was requested but none is usable."""
