"""Which encoder the feature store uses, read from ``feature_store.yaml``.

The encoder is part of the repository's configuration, in the ``batch_engine`` section
(so the stock ``feast`` CLI needs no extra flags)::

    batch_engine:
      type: hear_features.featurestore.engine.HearEngine
      model: standin          # or google/hear, or a local SavedModel directory
      batch_size: 64
      device: auto
      audio_roots: [/data/coughs]   # optional: audio may only be read from here

``HEAR_MODEL`` in the environment overrides ``model``; ``HEAR_AUDIO_ROOTS`` overrides
``audio_roots``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hear_features.audio.sources import AudioSources
from hear_features.encoders.resolve import DEFAULT_REPO, MODEL_ENV


@dataclass(frozen=True)
class EncoderSettings:
    """Everything needed to build the same encoder in any process."""

    model: str = DEFAULT_REPO
    revision: str | None = None
    batch_size: int = 64
    device: str = "auto"

    @classmethod
    def from_mapping(cls, section: dict[str, Any] | None) -> EncoderSettings:
        """From the ``batch_engine`` section (a dict); ``HEAR_MODEL`` wins over ``model``."""
        section = dict(section or {})
        model = os.environ.get(MODEL_ENV) or section.get("model") or DEFAULT_REPO
        model = _resolve_relative(model, section.get("repo_path"))
        return cls(
            model=model,
            revision=section.get("revision"),
            batch_size=int(section.get("batch_size", 64)),
            device=str(section.get("device", "auto")),
        )

    @classmethod
    def from_repo_config(cls, config: Any) -> EncoderSettings:
        """From a Feast ``RepoConfig``; relative model paths resolve against the repo."""
        raw = config.batch_engine_config if isinstance(config.batch_engine_config, dict) else {}
        return cls.from_mapping({**raw, "repo_path": str(config.repo_path or "")})


def _resolve_relative(model: str, repo_path: str | None) -> str:
    """A relative model directory in the YAML means relative to the repo, like Feast's paths."""
    if repo_path and model.startswith(("./", "../")):
        candidate = Path(repo_path) / model
        if candidate.exists():
            return str(candidate.resolve())
    return model


def audio_sources(config: Any) -> AudioSources:
    """The audio location policy of a Feast ``RepoConfig`` (relative roots: the repo)."""
    raw = config.batch_engine_config if isinstance(config.batch_engine_config, dict) else {}
    base = Path(config.repo_path) if config.repo_path else None
    return AudioSources.from_config(raw.get("audio_roots"), base)
