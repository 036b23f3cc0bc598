"""What Feast hands the online store, turned into rows for its SQLite table.

Two ways in: Feast's own ``online_write_batch`` (entity keys and ``ValueProto``
messages), and Arrow tables straight from the batch engine (plain values, no protobuf
messages). Both end as :class:`~hear_features.featurestore.online.sqlite.RowToWrite`,
with the vector of a view's indexed field checked (finite, one length) before anything
is written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
from feast import FeatureView
from feast.field import Field
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.utils import _get_feature_view_vector_field_metadata

from hear_features.errors import InputShapeError
from hear_features.featurestore.online import codec
from hear_features.featurestore.online.codec import Attribute
from hear_features.featurestore.online.sqlite import RowToWrite
from hear_features.index.arrays import check_vectors
from hear_features.index.sync import IndexSync

#: One row of Feast's ``online_write_batch``.
FeastRow = tuple[EntityKeyProto, dict[str, ValueProto], dt.datetime, dt.datetime | None]

_VECTOR_FIELDS: dict[int, tuple[FeatureView, Field | None]] = {}


def vector_field(view: FeatureView) -> Field | None:
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


def from_protos(data: list[FeastRow], vector: Field | None, version: int) -> list[RowToWrite]:
    """Rows of Feast's generic write path."""
    rows = []
    for key, values, event_ts, created_ts in data:
        features = dict(values)
        vec = None
        if vector is not None and vector.name in features:
            vec = _vector_from_value(features.pop(vector.name), vector.name)
        rows.append(
            RowToWrite(
                serialize_entity_key(key, entity_key_serialization_version=version),
                codec.encode_protos(features),
                vec,
                event_ts,
                created_ts,
                codec.attributes_of(features) if vector is not None else [],
            )
        )
    return rows


def from_arrow(view: FeatureView, rows: pa.Table, join_key: str, version: int) -> list[RowToWrite]:
    """Rows straight from Arrow: the join key column (strings), one column per feature
    of the view, ``event_timestamp`` and (optionally) ``created``.

    Scalars are stored from their plain values and the vector as float32, without
    building protobuf messages; other feature types go through Feast's value converter.
    """
    vector = vector_field(view)
    keys = [
        serialize_entity_key(
            EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=k)]),
            entity_key_serialization_version=version,
        )
        for k in rows[join_key].to_pylist()
    ]
    fields = [f for f in view.features if vector is None or f.name != vector.name]
    names = [f.name for f in fields]
    tags = [codec.TAG_OF_TYPE.get(f.dtype.to_value_type(), "p") for f in fields]
    columns = [
        rows[f.name].to_pylist()
        if tag != "p"
        else python_values_to_proto_values(rows[f.name].to_pylist(), f.dtype.to_value_type())
        for f, tag in zip(fields, tags, strict=True)
    ]
    value_rows = list(zip(*columns, strict=True)) if columns else [() for _ in range(rows.num_rows)]
    payloads = codec.encode_rows(names, tags, value_rows)
    vectors = None
    if vector is not None:
        vectors = _vectors_from_arrow(rows[vector.name])
        if not np.isfinite(vectors).all():
            bad = rows[join_key][int(np.argmin(np.isfinite(vectors).all(axis=1)))]
            raise InputShapeError(f"feature {vector.name} of {bad} contains NaN or infinite values")
    events = rows["event_timestamp"].to_pylist()
    created = (
        rows["created"].to_pylist() if "created" in rows.column_names else [None] * rows.num_rows
    )
    return [
        RowToWrite(
            keys[i],
            payloads[i],
            None if vectors is None else vectors[i],
            events[i],
            created[i],
            [] if vector is None else _attributes(names, tags, value_rows[i]),
        )
        for i in range(rows.num_rows)
    ]


def check_dimensions(rows: list[RowToWrite], field: Field, index_dim: int | None) -> None:
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


def check_vectors_to_write(rows: list[RowToWrite], field: Field, sync: IndexSync) -> None:
    """Everything about the vectors of a write that could fail once rows are written,
    checked before: their lengths (:func:`check_dimensions`), their norms
    (:func:`~hear_features.index.arrays.check_vectors`) and, when they will be the first
    vectors of the index, that the configured factory can be trained on them
    (:meth:`~hear_features.index.IndexConfig.factory_for`). Otherwise a failed index
    build would leave rows online that no index covers."""
    stored_dim = sync.stored_dim()
    check_dimensions(rows, field, stored_dim)
    vectors = [row.vector for row in rows if row.vector is not None]
    if vectors:
        check_vectors(np.stack(vectors), sync.config.metric, what=f"{field.name} vector")
        if stored_dim is None:  # the index is built from these rows alone
            sync.config.factory_for(len({row.key for row in rows if row.vector is not None}))


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
