"""Encoders: the HeAR SavedModel loader, model resolution, the stand-in and a HeAR-sized ViT."""

from __future__ import annotations

from hear_features.encoders.hear import (
    EncoderInfo,
    HearEncoder,
    validate_clips,
)
from hear_features.encoders.resolve import (
    ResolvedModel,
    default_cache_dir,
    resolve_model,
)
from hear_features.encoders.standin import build_standin, ensure_standin
from hear_features.encoders.vit import HEAR_SIZED_SHAPE, TINY_SHAPE, VitShape, build_vit, ensure_vit

__all__ = [
    "HEAR_SIZED_SHAPE",
    "TINY_SHAPE",
    "EncoderInfo",
    "HearEncoder",
    "ResolvedModel",
    "VitShape",
    "build_standin",
    "build_vit",
    "default_cache_dir",
    "ensure_standin",
    "ensure_vit",
    "resolve_model",
    "validate_clips",
]
