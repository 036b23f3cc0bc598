"""``HearOnlineStore``: the project's Feast online store, with FAISS vector search.

* Key-value features live in SQLite (WAL mode, so readers in other processes never
  block on a writer): one table per feature view, one row per entity
  (:mod:`~hear_features.featurestore.online.sqlite`). The newest event timestamp wins,
  whatever order writes arrive in.
* Views with a ``vector_index`` field also get a FAISS index of that field, kept in step
  with the table (:class:`hear_features.index.sync.IndexSync`) and persisted under
  ``index_path``; Feast's ``retrieve_online_documents_v2`` searches it, with metadata
  filters.
* The metric: a field's declared ``vector_search_metric`` wins (as in Feast's own
  retrieval, which replaces the requested metric with it); a field that declares none
  is searched with the requested metric (Feast's default request is ``L2``), each metric
  with an index of its own built from the same table on first use.
* Rows are deleted only by ``hear-features forget``, through
  :mod:`~hear_features.featurestore.online.erasure`.
* Reads and writes also exist as coroutines (``online_read_async``,
  ``online_write_batch_async``), which Feast's feature server uses.
* The store tells the on-demand transformation which encoder to use: Feast hands it
  the repository configuration on every read and write, and it passes the encoder
  settings from ``feature_store.yaml`` on to :mod:`hear_features.featurestore.runtime`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from feast import Entity, FeatureView
from feast.filter_models import ComparisonFilter, CompoundFilter
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.supported_async_methods import SupportedAsyncMethods
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from pydantic import model_validator

from hear_features.errors import ConfigError
from hear_features.featurestore import runtime
from hear_features.featurestore.config import STORE_TYPE, EncoderSettings, repo_relative
from hear_features.featurestore.online import identity, indexes, rows, scan
from hear_features.featurestore.online.bound import BoundView, Hit
from hear_features.featurestore.online.fields import filter_fields
from hear_features.featurestore.online.rows import FeastRow, vector_field
from hear_features.featurestore.online.sqlite import RowToWrite, StoredRow, ViewTable
from hear_features.index import IndexConfig
from hear_features.index.config import nest_flat_index_keys
from hear_features.index.sync import IndexSync

#: The extra feature every v2 search result carries.
DISTANCE = "distance"


class HearOnlineStoreConfig(FeastConfigBaseModel):
    """The ``online_store:`` section: where the SQLite file and the FAISS indexes live.

    The FAISS settings live in an ``index:`` section (:class:`~hear_features.index.IndexConfig`);
    the flat keys of earlier versions (``index_factory``, ``use_gpu``, ...) still work,
    with a warning.
    """

    type: Literal["hear_features.featurestore.online_store.HearOnlineStore"] = STORE_TYPE
    path: str = "data/online.db"
    """SQLite file for key-value features."""
    index_path: str = "data/index"
    """Folder for the FAISS indexes (one sub-folder per feature view)."""
    index: IndexConfig = IndexConfig()
    """How vector fields are indexed; the metric is each field's ``vector_search_metric``."""

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_index_keys(cls, data: Any) -> Any:
        return nest_flat_index_keys(data) if isinstance(data, dict) else data


ReadResult = list[tuple[dt.datetime | None, dict[str, ValueProto] | None]]
Document = tuple[dt.datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]


class HearOnlineStore(OnlineStore):
    """SQLite key-value storage plus FAISS vector search for Feast."""

    @property
    def async_supported(self) -> SupportedAsyncMethods:
        return SupportedAsyncMethods(read=True, write=True)

    # ---- writes -----------------------------------------------------------------------

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[FeastRow],
        progress: Callable[[int], Any] | None,
    ) -> None:
        self._activate_encoder(config)
        version = config.entity_key_serialization_version
        self._write(config, table, rows.from_protos(data, vector_field(table), version))
        if progress is not None:
            progress(len(data))

    async def online_write_batch_async(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`online_write_batch` in a worker thread (SQLite and FAISS block), for
        Feast's feature server."""
        await asyncio.to_thread(self.online_write_batch, *args, **kwargs)

    def write_arrow(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: pa.Table,
        join_key: str,
        progress: Callable[[int], Any] | None = None,
    ) -> None:
        """Write rows straight from Arrow (see :func:`~.rows.from_arrow`): the batch
        engine's fast path, without protobuf messages. Call :meth:`checkpoint` after a
        run of writes."""
        version = config.entity_key_serialization_version
        self._write(config, table, rows.from_arrow(table, data, join_key, version))
        if progress is not None:
            progress(data.num_rows)

    def checkpoint(self, config: RepoConfig, table: FeatureView) -> None:
        """Save the view's indexes now (writers call this after a run of writes)."""
        for sync in self._syncs_of(config, table):
            sync.checkpoint()

    def _write(self, config: RepoConfig, table: FeatureView, data: list[RowToWrite]) -> None:
        vector = vector_field(table)
        if vector is not None:  # refuse before anything is written, not halfway
            rows.check_vectors_to_write(data, vector, self._sync(config, table))
        written = view_table(config, table).write(data, with_vectors=vector is not None)
        if vector is not None:
            for sync in self._syncs_of(config, table):
                sync.apply(written.seq, written.ids, written.vectors)

    # ---- reads ------------------------------------------------------------------------

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> ReadResult:
        self._activate_encoder(config)
        version = config.entity_key_serialization_version
        keys = [
            serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys
        ]
        found = self.read(config, table, keys, requested_features)
        return [
            (None, None) if key not in found else (found[key].event_ts, found[key].features)
            for key in keys
        ]

    def read(
        self,
        config: RepoConfig,
        table: FeatureView,
        keys: list[bytes],
        features: Sequence[str] | None = None,
        *,
        plain: bool = False,
    ) -> dict[bytes, StoredRow]:
        """Stored rows by serialized entity key, with ``features`` (all when None);
        ``plain`` gives plain Python values instead of Feast ``Value`` messages."""
        vector = vector_field(table)
        found = view_table(config, table).read(
            "entity_key", keys, vector.name if vector else None, features, plain=plain
        )
        return {row.key: row for row in found}

    async def online_read_async(self, *args: Any, **kwargs: Any) -> ReadResult:
        """:meth:`online_read` in a worker thread, for Feast's feature server."""
        return await asyncio.to_thread(self.online_read, *args, **kwargs)

    def get_online_features(self, config: RepoConfig, *args: Any, **kwargs: Any) -> Any:
        self._activate_encoder(config)
        return super().get_online_features(config, *args, **kwargs)

    async def get_online_features_async(self, config: RepoConfig, *args: Any, **kwargs: Any) -> Any:
        self._activate_encoder(config)
        return await super().get_online_features_async(config, *args, **kwargs)

    def retrieve_online_documents_v2(
        self,
        config: RepoConfig,
        table: FeatureView,
        requested_features: list[str],
        embedding: list[float] | None,
        top_k: int,
        distance_metric: str | None = None,
        query_string: str | None = None,
        filters: ComparisonFilter | CompoundFilter | None = None,
        include_feature_view_version_metadata: bool = False,
    ) -> list[Document]:
        """Nearest stored vectors to ``embedding``, with the requested features.

        Each document carries a ``distance`` feature (smaller is closer; 1 - cosine for
        cosine views). The field's declared metric wins over ``distance_metric`` (see
        the module docstring). Feast 0.67 pairs the documents it receives with entities
        sorted by key, so they are returned in entity-key order: every hit keeps its own
        distance, and callers sort by distance for ranking.
        """
        if embedding is None:
            raise ConfigError("this online store searches by vector only (no text search)")
        query = np.asarray(embedding, dtype=np.float32)
        hits = self.search(
            config,
            table,
            query,
            top_k,
            filters=filters,
            features=requested_features,
            metric=distance_metric,
        )[0]
        version = config.entity_key_serialization_version
        documents: list[tuple[Any, Document]] = []
        for hit in hits:
            key = deserialize_entity_key(hit.key, entity_key_serialization_version=version)
            features = dict(hit.features)
            features[DISTANCE] = ValueProto(float_val=hit.distance)
            documents.append((_sort_key(key), (hit.event_ts, key, features)))
        documents.sort(key=lambda item: item[0])
        return [doc for _, doc in documents]

    def search(
        self,
        config: RepoConfig,
        table: FeatureView,
        queries: np.ndarray,
        k: int,
        *,
        filters: ComparisonFilter | CompoundFilter | None = None,
        features: Sequence[str] | None = None,
        metric: str | None = None,
        threads: int | None = None,
        plain: bool = False,
    ) -> list[list[Hit]]:
        """The ``k`` nearest stored entities of each query, nearest first, with features
        (:meth:`BoundView.search <hear_features.featurestore.online.bound.BoundView.search>`
        of :meth:`bind`): the common core of Feast's v2 retrieval and the search service."""
        return self.bind(config, table, metric).search(
            queries, k, filters=filters, features=features, threads=threads, plain=plain
        )

    def bind(self, config: RepoConfig, table: FeatureView, metric: str | None = None) -> BoundView:
        """``table`` resolved once for searching: its vector field, SQLite table, the
        features filters may name, and the index it is searched with (``metric`` counts
        only where the field declares none). Keep it for as long as the view's
        definition holds (the search service does)."""
        vector = vector_field(table)
        if vector is None:
            raise ConfigError(f"feature view {table.name} has no field with vector_index=True")
        return BoundView(
            table.name,
            vector,
            view_table(config, table),
            self._sync(config, table, metric),
            filter_fields(table),
        )

    def model_id(self, config: RepoConfig, table: FeatureView) -> str:
        """The model that made the vectors of ``table`` (``unknown`` before any write)."""
        return self._sync(config, table).model_id

    def refresh(self, config: RepoConfig, table: FeatureView) -> int:
        """Bring this process's index of ``table`` up to date; returns its size."""
        index = self._sync(config, table).current()
        return len(index) if index is not None else 0

    # ---- whole-view reads (the explorer's map) -------------------------------------------

    def generation(self, config: RepoConfig, table: FeatureView) -> int:
        """The number of the view's latest write batch (0 before any): it changes
        whenever a row does, so it names a state of the view for caches."""
        return view_table(config, table).latest_seq()

    def vector_snapshot(self, config: RepoConfig, table: FeatureView) -> scan.VectorSnapshot:
        """Every stored vector with its entity id, all from one generation."""
        return scan.vector_snapshot(
            view_table(config, table), config.entity_key_serialization_version
        )

    def attribute_summary(
        self, config: RepoConfig, table: FeatureView, max_values: int = 200
    ) -> list[scan.AttributeSummary]:
        """The scalar features of a vector view that filters (and maps) can use."""
        return scan.attribute_summary(view_table(config, table), max_values)

    def attribute_column(
        self, config: RepoConfig, table: FeatureView, name: str
    ) -> tuple[np.ndarray, list[str | float | None]]:
        """(row ids, values) of one scalar feature of a vector view."""
        return scan.attribute_column(view_table(config, table), name)

    def derived_folder(self, config: RepoConfig, table: FeatureView) -> Path:
        """Where caches computed from the view's vectors live (removed with the view)."""
        return index_root(config) / view_table(config, table).name / "derived"

    # ---- infrastructure -----------------------------------------------------------------

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        for view in tables_to_keep:
            table = view_table(config, view)
            table.create(with_vectors=vector_field(view) is not None)
            identity.database_id(table)
        self._drop(config, tables_to_delete)

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        self._drop(config, tables)

    def _drop(self, config: RepoConfig, views: Sequence[FeatureView]) -> None:
        for view in views:
            table = view_table(config, view)
            table.drop()
            indexes.drop(table, index_root(config))

    # ---- plumbing -----------------------------------------------------------------------

    def _sync(self, config: RepoConfig, view: FeatureView, metric: str | None = None) -> IndexSync:
        vector = vector_field(view)
        declared = vector.vector_search_metric if vector is not None else None
        table = view_table(config, view)
        return indexes.index_for(
            table, index_root(config), config.online_store.index, declared, metric
        )

    def _syncs_of(self, config: RepoConfig, view: FeatureView) -> list[IndexSync]:
        """Every index of ``view`` open in this process (the primary one at least)."""
        self._sync(config, view)
        return indexes.indexes_of(view_table(config, view))

    @staticmethod
    def _activate_encoder(config: RepoConfig) -> None:
        runtime.activate(EncoderSettings.from_repo_config(config))


def view_table(config: RepoConfig, view: FeatureView) -> ViewTable:
    """The SQLite table of ``view`` (any view with a ``name``)."""
    name = f"{config.project}_{view.name}".replace('"', "")
    return ViewTable(repo_relative(config, config.online_store.path), name)


def index_root(config: RepoConfig) -> Path:
    """The folder of the FAISS indexes (one sub-folder per view and metric)."""
    return repo_relative(config, config.online_store.index_path)


def _sort_key(key: EntityKeyProto) -> tuple[Any, ...]:
    """The order Feast's ``_get_unique_entities_from_values`` sorts entities in."""
    return tuple(getattr(v, v.WhichOneof("val")) for v in key.entity_values)
