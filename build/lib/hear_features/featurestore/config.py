"""The project's settings in ``feature_store.yaml``, and finding the repository.

Feast builds :class:`HearEngineConfig` from the ``batch_engine:`` section (it finds the
class next to :class:`~hear_features.featurestore.engine.HearEngine`, named by ``type:``).
Everything else that needs these settings reads them through :func:`engine_config`, so
the section is parsed one way. (The ``online_store:`` section's class,
``HearOnlineStoreConfig``, sits beside the store, where Feast looks for it.)::

    batch_engine:
      type: hear_features.featurestore.engine.HearEngine
      model: standin          # or google/hear, or a local SavedModel directory
      batch_size: 64
      device: auto
      audio_roots: [/data/coughs]   # optional: audio may only be read from here
      executor: local         # or ray: embed on a Ray cluster (the `ray` extra)
      ray_address: auto       # executor ray: a running cluster; unset starts a local Ray
      workers: 2              # executor ray: encoder actors, each loads the model once
      gpus_per_worker: 1      # executor ray: GPUs per actor (0 on CPU-only clusters)
      cpus_per_worker: 1      # executor ray: CPUs per actor
      study_columns:          # optional: a study's own metadata columns
        age: int64            # (hear_features.study)

Relative paths are relative to the feature repository. ``HEAR_MODEL`` in the environment
overrides ``model``; ``HEAR_AUDIO_ROOTS`` overrides ``audio_roots``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import yaml
from feast.repo_config import FeastConfigBaseModel
from pydantic import Field, field_validator, model_validator

from hear_features.audio.sources import AudioSources
from hear_features.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, model_spec
from hear_features.devices import Device
from hear_features.errors import ConfigError
from hear_features.schema import EMBEDDINGS_VIEW, REGISTRATIONS_VIEW
from hear_features.study import StudyColumns

if TYPE_CHECKING:
    from hear_features.encoders import HearEncoder

YAML: Final = "feature_store.yaml"
ENGINE_TYPE: Final = "hear_features.featurestore.engine.HearEngine"
STORE_TYPE: Final = "hear_features.featurestore.online_store.HearOnlineStore"
#: Where the embedding step runs: in the ``feast materialize`` process, or on Ray.
EXECUTORS: Final = ("local", "ray")


class HearEngineConfig(FeastConfigBaseModel):
    """The ``batch_engine:`` section: the encoder, the views it fills, the audio policy."""

    type: Literal["hear_features.featurestore.engine.HearEngine"] = ENGINE_TYPE
    model: str = DEFAULT_MODEL
    """Encoder: ``standin``, a Hugging Face repo id or a local SavedModel directory
    (``HEAR_MODEL`` overrides it)."""
    revision: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    device: Device = "auto"
    embeddings_view: str = EMBEDDINGS_VIEW
    registrations_view: str = REGISTRATIONS_VIEW
    lock_timeout_s: float = 600.0
    audio_roots: list[str] | None = None
    """Folders audio may be read from (relative: the repo); unset means any local file.
    ``HEAR_AUDIO_ROOTS`` overrides it."""
    backend: str | None = None
    executor: Literal["local", "ray"] = "local"
    """Where clips are decoded and embedded: ``local`` (this process) or ``ray`` (Ray Data
    batch inference over ``workers`` actors; needs the ``ray`` extra)."""
    ray_address: str | None = None
    """Executor ``ray``: the cluster to join (``auto``, ``ray://head:10001``, an address);
    unset starts a local Ray for the run (unless this process already joined one)."""
    workers: int = 2
    """Executor ``ray``: encoder actors; each loads the model once."""
    gpus_per_worker: float = 0.0
    """Executor ``ray``: GPUs reserved per actor (fractions share a GPU)."""
    cpus_per_worker: float = 1.0
    """Executor ``ray``: CPUs reserved per actor."""
    max_retries: int = 3
    """Executor ``ray``: how often a dead actor is restarted and its batches retried."""
    study_columns: dict[str, str] = Field(default_factory=dict)
    """A study's own metadata columns, name -> type (:mod:`hear_features.study`): kept
    from manifests, stored offline and online, searchable, in training sets."""

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, value: object) -> object:
        if value not in EXECUTORS:
            raise ConfigError(
                f"batch_engine: executor {value!r} is not one of {', '.join(EXECUTORS)}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> HearEngineConfig:
        if self.batch_size < 1:
            raise ConfigError("batch_engine: batch_size must be >= 1")
        if self.workers < 1:
            raise ConfigError("batch_engine: workers must be >= 1")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise ConfigError("batch_engine: gpus_per_worker and cpus_per_worker must be >= 0")
        if self.max_retries < 0:
            raise ConfigError("batch_engine: max_retries must be >= 0")
        return self

    @field_validator("study_columns", mode="before")
    @classmethod
    def _study_columns(cls, value: Any) -> dict[str, str]:
        return StudyColumns.declare(value).as_dict()

    @property
    def study(self) -> StudyColumns:
        return StudyColumns.declare(self.study_columns)


def engine_config(config: Any) -> HearEngineConfig:
    """The ``batch_engine`` section of a Feast ``RepoConfig``, as :class:`HearEngineConfig`.

    With another engine configured (Feast's local or Ray engine, say), the keys this
    project knows are still read from its section, and the rest take their defaults.
    """
    raw = config.batch_engine_config
    if isinstance(raw, HearEngineConfig):
        return raw
    if not isinstance(raw, dict):
        return HearEngineConfig()
    known = {k: v for k, v in raw.items() if k in HearEngineConfig.model_fields and k != "type"}
    return HearEngineConfig(**known)


def study_columns(config: Any) -> StudyColumns:
    """The study columns a Feast ``RepoConfig`` declares."""
    return engine_config(config).study


def declared_study_columns(repo: Path) -> StudyColumns:
    """The study columns declared in ``repo``'s ``feature_store.yaml`` (for
    ``definitions.py``, which Feast imports before it hands anything a configuration)."""
    try:
        raw = yaml.safe_load((repo / YAML).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {repo / YAML}: {exc}") from exc
    section = raw.get("batch_engine") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        return StudyColumns()
    return StudyColumns.declare(section.get("study_columns"))


def repo_path(config: Any) -> Path | None:
    """The folder of the feature repository (None for a configuration built in memory)."""
    return Path(config.repo_path) if config.repo_path else None


def repo_relative(config: Any, value: str) -> Path:
    """A path from the configuration: relative ones are relative to the repository."""
    path = Path(value)
    base = repo_path(config)
    return base / path if base is not None and not path.is_absolute() else path


def audio_sources(config: Any) -> AudioSources:
    """The audio location policy of a Feast ``RepoConfig`` (relative roots: the repo)."""
    return AudioSources.from_config(engine_config(config).audio_roots, repo_path(config))


def find_repo(repo: str | os.PathLike[str] | None = None) -> Path:
    """The feature repository to use: ``repo`` when given (it must hold ``feature_store.yaml``),
    else the current directory when it holds one, else ``./feature_repo``."""
    if repo is not None:
        repo = Path(repo)
        if not (repo / YAML).is_file():
            raise ConfigError(f"{repo} is not a Feast feature repository (no {YAML} in it)")
        return repo.resolve()
    found = find_repo_here()
    if found is None:
        raise ConfigError(
            f"no feature repository here: neither ./{YAML} nor ./feature_repo/{YAML} exists; "
            "pass --repo DIR"
        )
    return found


def find_repo_here() -> Path | None:
    """The current directory or ``./feature_repo``, whichever holds ``feature_store.yaml``."""
    for candidate in (Path.cwd(), Path.cwd() / "feature_repo"):
        if (candidate / YAML).is_file():
            return candidate.resolve()
    return None


@dataclass(frozen=True)
class EncoderSettings:
    """Everything needed to build the same encoder in any process (a cache key)."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "auto"

    @classmethod
    def from_repo_config(cls, config: Any) -> EncoderSettings:
        """From a Feast ``RepoConfig``: ``HEAR_MODEL`` wins over ``model``, and a relative
        model directory (``./models/hear``) is relative to the repository, like Feast's paths."""
        section = engine_config(config)
        model = model_spec(configured=section.model)
        base = repo_path(config)
        if base is not None and model.startswith(("./", "../")) and (base / model).exists():
            model = str((base / model).resolve())
        return cls(model, section.revision, section.batch_size, section.device)

    def load(self) -> HearEncoder:
        """A new encoder for these settings (a process that keeps one caches it itself)."""
        from hear_features.encoders import HearEncoder

        return HearEncoder.load(
            self.model, revision=self.revision, batch_size=self.batch_size, device=self.device
        )
