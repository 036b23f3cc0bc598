"""Encoders: the HeAR SavedModel loader, model resolution and the stand-in model."""

from __future__ import annotations

from hear_features.encoders.hear import (
    CLIP_SAMPLES,
    EMBEDDING_DIM,
    EncoderInfo,
    HearEncoder,
    validate_clips,
)
from hear_features.encoders.resolve import (
    DEFAULT_REPO,
    MODEL_ENV,
    STANDIN,
    ResolvedModel,
    default_cache_dir,
    resolve_model,
)
from hear_features.encoders.standin import build_standin, ensure_standin

__all__ = [
    "CLIP_SAMPLES",
    "DEFAULT_REPO",
    "EMBEDDING_DIM",
    "MODEL_ENV",
    "STANDIN",
    "EncoderInfo",
    "HearEncoder",
    "ResolvedModel",
    "build_standin",
    "default_cache_dir",
    "ensure_standin",
    "resolve_model",
    "validate_clips",
]
