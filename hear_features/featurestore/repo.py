"""Finding the feature repository and opening it.

Every ``hear-features`` command that touches the store takes ``--repo DIR``; without it
the current directory is used when it holds ``feature_store.yaml``, else
``./feature_repo``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from feast import FeatureStore, FileSource
from feast.errors import FeastObjectNotFoundException

from hear_features.errors import ConfigError
from hear_features.featurestore import runtime
from hear_features.featurestore.settings import EncoderSettings

log = logging.getLogger(__name__)

YAML = "feature_store.yaml"
REGISTRATIONS_VIEW = "clip_metadata"
EMBEDDINGS_VIEW = "cough_embeddings"


def find_repo(repo: Path | None = None) -> Path:
    """The feature repository to use (see the module docstring)."""
    if repo is not None:
        if not (repo / YAML).is_file():
            raise ConfigError(f"{repo} is not a Feast feature repository (no {YAML} in it)")
        return repo.resolve()
    for candidate in (Path.cwd(), Path.cwd() / "feature_repo"):
        if (candidate / YAML).is_file():
            return candidate.resolve()
    raise ConfigError(
        f"no feature repository here: neither ./{YAML} nor ./feature_repo/{YAML} exists; "
        "pass --repo DIR"
    )


def open_store(repo: Path | None = None) -> FeatureStore:
    """A ``FeatureStore`` for the repository, with its encoder settings made active.

    Prefer this to ``FeatureStore(repo_path=...)`` in code that writes through the
    ``hear_embedding_on_write`` transformation: Feast runs that transformation before it
    touches any store, so nothing else can tell it which encoder the repository uses.
    """
    path = find_repo(repo)
    try:
        store = FeatureStore(repo_path=str(path))
    except Exception as exc:  # Feast raises pydantic and its own errors for bad YAML
        raise ConfigError(f"{path / YAML} is not a valid Feast configuration: {exc}") from exc
    runtime.activate(EncoderSettings.from_repo_config(store.config))
    return store


@dataclass(frozen=True)
class Tables:
    """Where the offline tables of a repository live."""

    registrations: Path
    embeddings: Path


def tables(store: FeatureStore) -> Tables:
    """The Parquet files behind the two views.

    After ``feast apply`` the registry says where they are. Before it (registering is
    the first step of the workflow) they are where ``feature_repo/definitions.py`` puts
    them: ``<repo>/data/``.
    """
    default = Path(store.repo_path) / "data"
    return Tables(
        registrations=_view_path(store, REGISTRATIONS_VIEW) or default / "registrations.parquet",
        embeddings=_view_path(store, EMBEDDINGS_VIEW) or default / "embeddings.parquet",
    )


def _view_path(store: FeatureStore, name: str) -> Path | None:
    try:
        view = store.get_feature_view(name)
    except FeastObjectNotFoundException:  # not applied yet
        return None
    source = view.batch_source
    return Path(source.path) if isinstance(source, FileSource) else None
