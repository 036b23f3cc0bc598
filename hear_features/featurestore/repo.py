"""Opening a feature repository, and where its offline tables live.

Every ``hear-features`` command that touches the store takes ``--repo DIR``; without it
the current directory is used when it holds ``feature_store.yaml``, else
``./feature_repo`` (:func:`~hear_features.featurestore.config.find_repo`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from feast import FeatureStore, FileSource
from feast.errors import FeastObjectNotFoundException

from hear_features.errors import ConfigError
from hear_features.featurestore import runtime
from hear_features.featurestore.config import (
    YAML,
    EncoderSettings,
    engine_config,
    find_repo,
    study_columns,
)
from hear_features.featurestore.tables import check_table_path
from hear_features.quiet import quiet_warnings
from hear_features.schema import EMBEDDING_SCHEMA, REGISTRATION_SCHEMA

log = logging.getLogger(__name__)


def open_store(repo: str | os.PathLike[str] | None = None) -> FeatureStore:
    """A ``FeatureStore`` for the repository, with its encoder settings made active.

    Prefer this to ``FeatureStore(repo_path=...)`` in code that writes through the
    ``hear_embedding_on_write`` transformation: Feast runs that transformation before it
    touches any store, so nothing else can tell it which encoder the repository uses.
    ``repo`` is the folder holding ``feature_store.yaml`` (a ``str`` or a path; default:
    as :func:`~hear_features.featurestore.config.find_repo` says).
    """
    path = find_repo(repo)
    try:
        store = FeatureStore(repo_path=str(path))
    except Exception as exc:  # Feast raises pydantic and its own errors for bad YAML
        raise ConfigError(f"{path / YAML} is not a valid Feast configuration: {exc}") from exc
    runtime.activate(EncoderSettings.from_repo_config(store.config))
    quiet_warnings()  # Feast's modules put "once" filters ahead of ours when imported
    return store


@dataclass(frozen=True)
class Views:
    """The names of the two views (``feature_store.yaml`` may rename them)."""

    registrations: str
    embeddings: str


def views(store: FeatureStore) -> Views:
    section = engine_config(store.config)
    return Views(section.registrations_view, section.embeddings_view)


@dataclass(frozen=True)
class Tables:
    """Where the offline tables of a repository live."""

    registrations: Path
    embeddings: Path


def tables(store: FeatureStore) -> Tables:
    """The Parquet files behind the two views.

    After ``feast apply`` the registry says where they are. Before it (registering is
    the first step of the workflow) they are where ``feature_repo/definitions.py`` puts
    them: ``<repo>/data/``. :class:`ConfigError` for a path DuckDB would misread
    (:func:`~hear_features.featurestore.tables.check_table_path`) and for a registry
    that names another repository's tables (a copied folder not applied again).
    """
    default = Path(store.repo_path) / "data"
    names = views(store)
    found = Tables(
        registrations=_view_path(store, names.registrations) or default / "registrations.parquet",
        embeddings=_view_path(store, names.embeddings) or default / "embeddings.parquet",
    )
    columns = {*REGISTRATION_SCHEMA.names, *EMBEDDING_SCHEMA.names, *study_columns(store.config)}
    check_table_path(found.registrations, columns)
    check_table_path(found.embeddings, columns)
    return found


def _view_path(store: FeatureStore, name: str) -> Path | None:
    try:
        view = store.get_feature_view(name)
    except FeastObjectNotFoundException:  # not applied yet
        return None
    source = view.batch_source
    if not isinstance(source, FileSource):
        return None
    repo = Path(store.repo_path).resolve()
    path = Path(source.path)
    path = path if path.is_absolute() else repo / path  # as Feast reads it
    owner = _repo_holding(path.parent)
    # Another repository's folder, not one this repository lies in (tables kept on
    # purpose beside the repositories of a larger project).
    if owner is not None and owner != repo and owner not in repo.parents:
        raise ConfigError(
            f"the registry of {repo} says view {name} reads {path}, a table of another "
            f"feature repository ({owner}): the registry was applied there (a copied "
            f"folder?). Run `feast apply` in {repo} so that its views read its own tables."
        )
    return path


def _repo_holding(folder: Path, levels: int = 3) -> Path | None:
    """The feature repository (a folder with ``feature_store.yaml``) that ``folder`` is,
    or lies in within ``levels`` levels; None for a folder of no repository."""
    folder = folder.resolve()
    for candidate in [folder, *folder.parents][: levels + 1]:
        if (candidate / YAML).is_file():
            return candidate
    return None
