"""Every exception hear-features raises on purpose, in one hierarchy.

Each error a user can cause derives from :class:`HearFeaturesError`, so the CLI prints
it as one line and the API answers it with a 4xx JSON body, never a stack trace. Errors
that are our own bugs stay ordinary Python exceptions. The core knows nothing of HTTP:
the API maps these classes to status codes in one table (:mod:`hear_features.api.errors`).

::

    HearFeaturesError                  something the user can fix, in plain words
    ├── ConfigError                    a setting, flag, request or configuration file is wrong
    │   ├── DeviceError                a GPU was required but none is usable
    │   ├── TimestampError             not an ISO 8601 date/time (also a ValueError)
    │   ├── FilterError                a metadata filter names an unknown field or a bad value
    │   └── InvalidRequest             an API request that parses but does not make sense
    ├── AudioError                     an audio file or buffer cannot be used (names it)
    │   ├── SourceRefused              the audio location policy forbids reading it
    │   ├── SourceMovedError           a registered recording is gone from its place
    │   └── SourceChangedError         a registered recording's bytes changed since
    ├── InputShapeError                an array has the wrong shape, dtype or values
    ├── MapError                       a map of the embeddings cannot be made as asked
    ├── MapComputationFailed           computing a map in the background failed
    ├── ModelError                     the encoder cannot be found, downloaded or used
    │   ├── ModelNotFoundError         nothing at the given location
    │   ├── ModelAccessError           the hub refused access (gated, private, bad token)
    │   └── InvalidModelError          not a HeAR-compatible SavedModel
    ├── ModelMismatchError             vectors of two models would be mixed or compared
    ├── UnknownClipError               clip ids the store has never seen
    ├── MaterializationError           some clips could not be embedded (others were stored)
    ├── IndexLoadError                 an index file or manifest is missing, corrupt or foreign
    ├── LockTimeout                    another process holds a table's lock for too long
    ├── DemoError                      a step of ``hear-features demo`` failed
    ├── ProbeError                     a linear probe cannot run on the selection as asked
    └── ServiceError                   the HTTP service refuses a request as a whole
        ├── NotReady                   still loading its index and encoder
        ├── Unauthorized               missing or wrong API key
        ├── Forbidden                  the key's role may not do or see what was asked
        ├── RateLimited                the key's request rate is over its limit
        ├── PayloadTooLarge            a request body over the size limit
        └── Overloaded                 no work slot or time left for the request
"""

from __future__ import annotations

from pathlib import Path


class HearFeaturesError(Exception):
    """Base class: something the user can fix, described in plain words."""


class ConfigError(HearFeaturesError):
    """A setting, flag or configuration file is malformed or inconsistent."""


class DeviceError(ConfigError):
    """A GPU was requested but none is usable."""


class TimestampError(ConfigError, ValueError):
    """A value that is not an ISO 8601 date/time (:mod:`hear_features.timestamps`). Also a
    ``ValueError``, so pydantic models that parse with it answer a validation error."""


class FilterError(ConfigError):
    """A metadata filter names a field the view does not have (the message lists those it
    has), or gives a value its field's type cannot hold."""


class InvalidRequest(ConfigError):
    """A request that parses but does not make sense (e.g. neither entities nor seeds)."""


class AudioError(HearFeaturesError):
    """An audio file or buffer cannot be used; names the source and the problem."""

    def __init__(self, source: str | Path, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class SourceRefused(AudioError):
    """A location that the audio location policy does not allow to be read."""


class SourceMovedError(AudioError):
    """A registered recording is no longer where it was registered (moved or deleted)."""


class SourceChangedError(AudioError):
    """A registered recording's bytes differ from its registered content hash."""


class InputShapeError(HearFeaturesError):
    """An array given to the encoder or the index has the wrong shape, dtype or values."""


class MapError(HearFeaturesError):
    """A 2-D map of the stored embeddings cannot be made as asked (too few points, bad column)."""


class MapComputationFailed(HearFeaturesError):
    """Computing a map in the background failed; the server log has the traceback."""


class ModelError(HearFeaturesError):
    """The encoder model cannot be found, downloaded or used."""


class ModelNotFoundError(ModelError):
    """No model at the given location (local directory, hub repository or cache)."""


class ModelAccessError(ModelError):
    """The hub refused access (gated or private repository, missing or bad token)."""


class InvalidModelError(ModelError):
    """A directory exists but does not hold a HeAR-compatible SavedModel."""


class ModelMismatchError(HearFeaturesError):
    """Vectors of different models would be mixed or compared: distances would mean nothing."""


class UnknownClipError(HearFeaturesError):
    """Clip ids that the store has never seen."""


class MaterializationError(HearFeaturesError):
    """Some registered clips could not be embedded; the others were stored."""


class IndexLoadError(HearFeaturesError):
    """An index file or manifest is missing, corrupt, or does not match what was asked for."""


class LockTimeout(HearFeaturesError):
    """Another process holds the lock for longer than we were willing to wait."""


class DemoError(HearFeaturesError):
    """A step of the demo failed; the message carries the step's own output."""


class ProbeError(HearFeaturesError):
    """A linear probe cannot be run on the selection as asked.

    Unknown target or group column, a target with one class, fewer groups than folds,
    too few clips, a malformed ``--where`` condition: each named in plain words.
    """


class ServiceError(HearFeaturesError):
    """The HTTP service refuses a request as a whole (before any use case runs)."""


class NotReady(ServiceError):
    """The service is still loading its index and encoder."""


class Unauthorized(ServiceError):
    """The request lacks the server's API key, or carries a wrong one."""


class PayloadTooLarge(ServiceError):
    """A request body is larger than the server accepts."""


class Forbidden(ServiceError):
    """The key is valid, but its role may not do this or see these fields."""


class RateLimited(ServiceError):
    """The key sent more requests than its rate limit allows; ``retry_after_s`` says when
    the next one will be accepted."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(ServiceError):
    """The request could not get a work slot, or ran out of its time budget."""
