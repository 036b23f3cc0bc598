"""The encoder seen by Feast's on-demand transformations, one per process.

Everywhere else an encoder is passed in explicitly. Feast, however, calls a python-mode
transformation with nothing but its input columns, and re-creates the function from its
source text, so the function cannot close over an encoder. This module is the one place
that bridges that gap: a cache of loaded encoders keyed by :class:`EncoderSettings`, and
the settings that the transformation should use in this process.

The settings come, in order, from:

1. :func:`activate`, called by our batch engine and online store when Feast builds them
   from ``feature_store.yaml``, and by :func:`hear_features.featurestore.open_store`;
2. the ``feature_store.yaml`` of the current directory (or ``./feature_repo``), which is
   where the ``feast`` CLI runs (``HEAR_MODEL`` overrides its model, as everywhere);
3. ``HEAR_MODEL`` alone, outside any repository.
"""

from __future__ import annotations

import logging
import threading

from hear_features.defaults import MODEL_ENV, model_from_env, model_spec
from hear_features.encoders import HearEncoder
from hear_features.errors import ConfigError
from hear_features.featurestore.config import YAML, EncoderSettings, find_repo_here

log = logging.getLogger(__name__)

_lock = threading.Lock()
_encoders: dict[EncoderSettings, HearEncoder] = {}
_active: EncoderSettings | None = None


def encoder_for(settings: EncoderSettings) -> HearEncoder:
    """The encoder for ``settings``, loaded on first use and kept for the process."""
    with _lock:
        encoder = _encoders.get(settings)
        if encoder is None:
            encoder = settings.load()
            log.info("loaded encoder %s", encoder.describe())
            _encoders[settings] = encoder
        return encoder


def activate(settings: EncoderSettings) -> None:
    """Make ``settings`` the ones on-demand transformations use in this process."""
    global _active
    _active = settings


def active_settings() -> EncoderSettings:
    """The settings for on-demand transformations (see the module docstring)."""
    if _active is not None:
        return _active
    repo = find_repo_here()
    if repo is not None:
        from feast.repo_config import load_repo_config

        return EncoderSettings.from_repo_config(load_repo_config(repo, repo / YAML))
    if model_from_env() is not None:
        return EncoderSettings(model=model_spec())
    raise ConfigError(
        "no encoder is configured for the HeAR transformation: open the store with "
        "hear_features.featurestore.open_store(REPO), run from the feature repository, "
        f"or set {MODEL_ENV}"
    )


def active_encoder() -> HearEncoder:
    return encoder_for(active_settings())
