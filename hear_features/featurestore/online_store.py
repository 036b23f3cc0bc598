"""``HearOnlineStore``: the project's Feast online store, with FAISS vector search.

* Key-value features live in SQLite (WAL mode, so readers in other processes never
  block on a writer): one table per feature view, one row per entity (see
  :mod:`hear_features.featurestore.online_tables`). The newest event timestamp wins,
  whatever order writes arrive in.
* Views with a ``vector_index`` field also get a FAISS index of that field
  (:mod:`hear_features.featurestore.online_index`), kept current incrementally and
  persisted under ``index_path``; Feast's ``retrieve_online_documents_v2`` searches it,
  with metadata filters.
* The store also tells the on-demand transformation which encoder to use: Feast hands
  it the repository configuration on every read and write, and it passes the encoder
  settings from ``feature_store.yaml`` on to :mod:`hear_features.featurestore.runtime`.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
from feast import Entity, FeatureView
from feast.field import Field
from feast.filter_models import ComparisonFilter, CompoundFilter
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.utils import _get_feature_view_vector_field_metadata

from hear_features.errors import ConfigError, InputShapeError
from hear_features.featurestore import feature_codec, online_tables, runtime
from hear_features.featurestore.feature_codec import Attribute
from hear_features.featurestore.online_index import AttributeFilter, IndexHandle
from hear_features.featurestore.online_tables import EntityRow
from hear_features.featurestore.settings import EncoderSettings
from hear_features.index import IndexConfig, Metric

STORE_TYPE: Final = "hear_features.featurestore.online_store.HearOnlineStore"
#: The extra feature every v2 search result carries.
DISTANCE = "distance"


class HearOnlineStoreConfig(FeastConfigBaseModel):
    """The ``online_store:`` section of ``feature_store.yaml``.

    Relative paths are relative to the feature repository.
    """

    type: Literal["hear_features.featurestore.online_store.HearOnlineStore"] = STORE_TYPE
    path: str = "data/online.db"
    """SQLite file for key-value features."""
    index_path: str = "data/index"
    """Folder for the FAISS indexes (one sub-folder per feature view)."""
    index_factory: str = "auto"
    """``auto`` (flat, then IVF above ``flat_threshold``) or a FAISS factory string."""
    flat_threshold: int = 20_000
    recall_target: float = 0.95
    nprobe: int | None = None
    """Fix IVF's nprobe instead of tuning it for ``recall_target``."""
    use_gpu: Literal["auto", "never", "always"] = "auto"
    gpu_fp16: bool = False
    mmap: bool = False
    """Memory-map saved IVF indexes (read-mostly servers)."""


Row = tuple[EntityKeyProto, dict[str, ValueProto], dt.datetime, dt.datetime | None]


@dataclass(frozen=True)
class Hit:
    """One search result: the serialized entity key, how close it is, its features."""

    key: bytes
    distance: float
    score: float
    features: dict[str, Any]  # Feast values; plain Python with search(plain=True)
    event_ts: dt.datetime


Document = tuple[dt.datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]


class HearOnlineStore(OnlineStore):
    """SQLite key-value storage plus FAISS vector search for Feast."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._handles: dict[tuple[Path, str], IndexHandle] = {}
        self._handles_lock = threading.Lock()

    # ---- writes -----------------------------------------------------------------------

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        self._activate_encoder(config)
        version = config.entity_key_serialization_version
        vector = _vector_field(table)
        rows = []
        for key, values, event_ts, created_ts in data:
            features = dict(values)
            vec = None
            if vector is not None and vector.name in features:
                vec = _vector_from_value(features.pop(vector.name), vector.name)
            rows.append(
                EntityRow(
                    serialize_entity_key(key, entity_key_serialization_version=version),
                    feature_codec.encode_protos(features),
                    vec,
                    event_ts,
                    created_ts,
                    feature_codec.attributes_of(features) if vector is not None else [],
                )
            )
        self._write(config, table, rows)
        if progress is not None:
            progress(len(data))

    def write_arrow(
        self,
        config: RepoConfig,
        table: FeatureView,
        rows: pa.Table,
        join_key: str,
        progress: Callable[[int], Any] | None = None,
    ) -> None:
        """Write rows straight from Arrow: the batch engine's fast path.

        ``rows`` holds the join key column (strings), one column per feature of the
        view, ``event_timestamp`` and ``created``. Scalars are stored from their plain
        values and the vector as float32, without building protobuf messages; other
        feature types go through Feast's own value converter.
        """
        version = config.entity_key_serialization_version
        vector = _vector_field(table)
        keys = [
            serialize_entity_key(
                EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=k)]),
                entity_key_serialization_version=version,
            )
            for k in rows[join_key].to_pylist()
        ]
        fields = [f for f in table.features if vector is None or f.name != vector.name]
        names = [f.name for f in fields]
        tags = [feature_codec.TAG_OF_TYPE.get(f.dtype.to_value_type(), "p") for f in fields]
        columns = [
            rows[f.name].to_pylist()
            if tag != "p"
            else python_values_to_proto_values(rows[f.name].to_pylist(), f.dtype.to_value_type())
            for f, tag in zip(fields, tags, strict=True)
        ]
        value_rows = (
            list(zip(*columns, strict=True)) if columns else [() for _ in range(rows.num_rows)]
        )
        payloads = feature_codec.encode_rows(names, tags, value_rows)
        attributes = (
            [_attributes(names, tags, values) for values in value_rows]
            if vector is not None
            else None
        )
        vectors = _vectors_from_arrow(rows[vector.name]) if vector is not None else None
        if vector is not None and vectors is not None and not np.isfinite(vectors).all():
            bad = rows[join_key][int(np.argmin(np.isfinite(vectors).all(axis=1)))]
            raise InputShapeError(f"feature {vector.name} of {bad} contains NaN or infinite values")
        events = rows["event_timestamp"].to_pylist()
        created = (
            rows["created"].to_pylist()
            if "created" in rows.column_names
            else [None] * rows.num_rows
        )
        entity_rows = [
            EntityRow(
                keys[i],
                payloads[i],
                None if vectors is None else vectors[i],
                events[i],
                created[i],
                [] if attributes is None else attributes[i],
            )
            for i in range(rows.num_rows)
        ]
        self._write(config, table, entity_rows)
        if progress is not None:
            progress(rows.num_rows)

    def _write(self, config: RepoConfig, table: FeatureView, rows: list[EntityRow]) -> None:
        name = _table_name(config, table)
        vector = _vector_field(table)
        with_vectors = vector is not None
        conn = self._conn(config)
        if vector is not None:  # refuse before anything is written, not halfway
            _check_dimensions(rows, vector, self._handle(config, table).stored_dim(conn))
        seq, written = online_tables.write(conn, name, rows, with_vectors=with_vectors)
        if with_vectors:
            self._handle(config, table).apply(conn, seq, written)

    def checkpoint(self, config: RepoConfig, table: FeatureView) -> None:
        """Save the view's index now (the batch engine calls this after materialising)."""
        if _vector_field(table) is not None:
            handle = self._handle(config, table)
            handle.current(self._conn(config))
            handle.checkpoint()

    # ---- reads ------------------------------------------------------------------------

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[dt.datetime | None, dict[str, ValueProto] | None]]:
        self._activate_encoder(config)
        version = config.entity_key_serialization_version
        keys = [
            serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys
        ]
        vector = _vector_field(table)
        found = online_tables.read_by_keys(
            self._conn(config),
            _table_name(config, table),
            keys,
            vector.name if vector else None,
            requested_features,
        )
        result: list[tuple[dt.datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            row = found.get(key)
            if row is None:
                result.append((None, None))
            else:
                result.append((row.event_ts, row.features))
        return result

    def get_online_features(self, config: RepoConfig, *args: Any, **kwargs: Any) -> Any:
        self._activate_encoder(config)
        return super().get_online_features(config, *args, **kwargs)

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
        cosine views). Feast 0.67 pairs the documents it receives with entities sorted
        by key, so they are returned in entity-key order: every hit keeps its own
        distance, and callers sort by distance for ranking.
        """
        if embedding is None:
            raise ConfigError("this online store searches by vector only (no text search)")
        hits = self.search(
            config,
            table,
            np.asarray(embedding, dtype=np.float32),
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
        features: list[str] | None = None,
        metric: str | None = None,
        threads: int | None = None,
        plain: bool = False,
    ) -> list[list[Hit]]:
        """The ``k`` nearest stored entities of each query, nearest first, with features.

        The common core of Feast's v2 retrieval and the HTTP API. ``features`` None
        means all of them (the vector included); the vector is decoded only when asked
        for, because that costs more than the search itself. ``threads`` as in
        :meth:`hear_features.index.VectorIndex.search` (servers pass 1). ``plain``
        returns features as plain Python values rather than Feast ``Value`` messages.
        """
        vector = _vector_field(table)
        if vector is None:
            raise ConfigError(f"feature view {table.name} has no field with vector_index=True")
        handle = self._handle(config, table)
        requested = Metric.parse(metric) if metric else None
        if requested is not None and requested is not handle.config.metric:
            raise ConfigError(
                f"{table.name}.{vector.name} is indexed for {handle.config.metric} search, "
                f"not {requested}"
            )
        if k < 1:
            raise InputShapeError(f"k must be at least 1, got {k}")
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or not np.isfinite(q).all():
            raise InputShapeError("the query embedding must be a flat list of finite numbers")
        conn = self._conn(config)
        name = _table_name(config, table)
        result = handle.search(
            conn, q, k, AttributeFilter(name).allowed_ids(conn, filters), threads
        )
        if result is None:
            return [[] for _ in q]
        ids = sorted({int(i) for i in result.ids.ravel() if i >= 0})
        rows = online_tables.read_by_ids(conn, name, ids, vector.name, features, plain=plain)
        answers: list[list[Hit]] = []
        for row_index in range(len(q)):
            hits = []
            for row_id, distance, score in result.hits(row_index):
                row = rows.get(row_id)
                if row is not None:  # None: deleted since the index was read
                    hits.append(Hit(row.key, distance, score, row.features, row.event_ts))
            answers.append(hits)
        return answers

    def model_id(self, config: RepoConfig, table: FeatureView) -> str:
        """The model that made the vectors of ``table`` (``unknown`` before any write)."""
        return self._handle(config, table).model_id

    def refresh(self, config: RepoConfig, table: FeatureView) -> int:
        """Bring this process's index of ``table`` up to date; returns its size."""
        index = self._handle(config, table).current(self._conn(config))
        return len(index) if index is not None else 0

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
        conn = self._conn(config)
        for view in tables_to_keep:
            online_tables.create(
                conn, _table_name(config, view), with_vectors=_vector_field(view) is not None
            )
        self._drop(config, tables_to_delete)

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        self._drop(config, tables)

    def _drop(self, config: RepoConfig, views: Sequence[FeatureView]) -> None:
        conn = self._conn(config)
        for view in views:
            name = _table_name(config, view)
            online_tables.drop(conn, name)
            shutil.rmtree(_index_root(config) / name, ignore_errors=True)
            with self._handles_lock:
                self._handles.pop((_db_path(config), name), None)

    # ---- plumbing -----------------------------------------------------------------------

    def _handle(self, config: RepoConfig, table: FeatureView) -> IndexHandle:
        name = _table_name(config, table)
        key = (_db_path(config), name)
        with self._handles_lock:
            handle = self._handles.get(key)
            if handle is None:
                handle = IndexHandle(name, _index_root(config) / name, _index_config(config, table))
                self._handles[key] = handle
            return handle

    def _conn(self, config: RepoConfig) -> sqlite3.Connection:
        """One connection per thread and database file (sqlite3 objects are not thread-safe)."""
        path = _db_path(config)
        conns: dict[Path, sqlite3.Connection] = getattr(self._local, "conns", None) or {}
        self._local.conns = conns
        if path not in conns:
            path.parent.mkdir(parents=True, exist_ok=True)
            conns[path] = online_tables.connect(str(path))
        return conns[path]

    @staticmethod
    def _activate_encoder(config: RepoConfig) -> None:
        runtime.activate(EncoderSettings.from_repo_config(config))


def _repo_relative(config: RepoConfig, value: str) -> Path:
    path = Path(value)
    if not path.is_absolute() and config.repo_path:
        path = Path(config.repo_path) / path
    return path


def _db_path(config: RepoConfig) -> Path:
    return _repo_relative(config, config.online_store.path)


def _index_root(config: RepoConfig) -> Path:
    return _repo_relative(config, config.online_store.index_path)


def _table_name(config: RepoConfig, view: FeatureView) -> str:
    return f"{config.project}_{view.name}".replace('"', "")


_VECTOR_FIELDS: dict[int, tuple[FeatureView, Field | None]] = {}


def _vector_field(view: FeatureView) -> Field | None:
    """The view's indexed vector field. Cached per view object: Feast rebuilds the
    schema (with an import and runtime type checks) on every call, on every search."""
    cached = _VECTOR_FIELDS.get(id(view))
    if cached is not None and cached[0] is view:
        return cached[1]
    field = _get_feature_view_vector_field_metadata(view)
    found = field if field is not None and field.vector_index else None
    if len(_VECTOR_FIELDS) > 256:
        _VECTOR_FIELDS.clear()
    _VECTOR_FIELDS[id(view)] = (view, found)
    return found


def _index_config(config: RepoConfig, view: FeatureView) -> IndexConfig:
    store = config.online_store
    vector = _vector_field(view)
    return IndexConfig(
        metric=Metric.parse(vector.vector_search_metric if vector else None),
        factory=store.index_factory,
        flat_threshold=store.flat_threshold,
        recall_target=store.recall_target,
        nprobe=store.nprobe,
        use_gpu=store.use_gpu,
        gpu_fp16=store.gpu_fp16,
        mmap=store.mmap,
    )


def _vector_from_value(value: ValueProto, name: str) -> np.ndarray | None:
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind not in ("float_list_val", "double_list_val"):
        raise InputShapeError(f"feature {name} must be a list of floats, got {kind}")
    vec = np.asarray(getattr(value, kind).val, dtype=np.float32)
    if not np.isfinite(vec).all():
        raise InputShapeError(f"feature {name} contains NaN or infinite values")
    return vec


def _check_dimensions(rows: list[EntityRow], field: Field, index_dim: int | None) -> None:
    """Every vector has the view's declared length, and the stored vectors' length."""
    want = field.vector_length or index_dim
    for row in rows:
        if row.vector is None:
            continue
        if want is None:
            want = len(row.vector)
        elif len(row.vector) != want:
            raise InputShapeError(
                f"feature {field.name} must have {want} values, got {len(row.vector)}; "
                "nothing was written"
            )
    if index_dim is not None and want is not None and want != index_dim:
        raise InputShapeError(
            f"feature {field.name} has {want} values but the stored vectors have {index_dim}"
        )


def _vectors_from_arrow(column: pa.ChunkedArray) -> np.ndarray:
    """A list<float> column as float32 [n, d], without a Python loop."""
    array = column.combine_chunks()
    lengths = np.asarray(array.value_lengths().to_numpy(zero_copy_only=False))
    if len(lengths) and (lengths != lengths[0]).any():
        raise InputShapeError("vectors in one batch must all have the same length")
    flat = np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(len(array), -1) if len(array) else np.zeros((0, 0), np.float32)


def _attributes(names: list[str], tags: list[str], values: tuple[Any, ...]) -> list[Attribute]:
    """The filterable (name, text, number) triples of one row of plain values."""
    out: list[Attribute] = []
    for name, tag, value in zip(names, tags, values, strict=True):
        if value is None or tag == "p":
            continue
        out.append((name, value, None) if tag == "s" else (name, None, float(value)))
    return out


def _sort_key(key: EntityKeyProto) -> tuple[Any, ...]:
    """The order Feast's ``_get_unique_entities_from_values`` sorts entities in."""
    return tuple(getattr(v, v.WhichOneof("val")) for v in key.entity_values)
