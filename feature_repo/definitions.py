"""Feast definitions for hear-features: the clip entity, its views and transformations.

Only definitions live in this folder: `feast apply` imports every .py file here.
Data paths are absolute (derived from this file), because Feast resolves a FileSource's
relative path against the current directory, not the repository.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from feast import Entity, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String

from hear_features import schema
from hear_features.featurestore.config import declared_study_columns

REPO = Path(__file__).resolve().parent
DATA = REPO / "data"

clip = Entity(
    name=schema.ENTITY,
    join_keys=[schema.JOIN_KEY],
    value_type=ValueType.STRING,
    description="One 2 s window of a recording: <recording sha256[:16]>-<offset ms>.",
)


def _parquet_source(name: str, file: str) -> FileSource:
    return FileSource(
        name=name,
        path=str(DATA / file),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )


_FEAST_TYPES = {
    pa.string(): String,
    pa.float64(): Float64,
    pa.int32(): Int32,
    pa.int64(): Int64,
    pa.bool_(): Bool,
}


def _fields(columns: tuple[pa.Field, ...]) -> list[Field]:
    """Feast fields for table columns of hear_features.schema (the join key is no feature)."""
    return [
        Field(name=c.name, dtype=_FEAST_TYPES[c.type]) for c in columns if c.name != schema.JOIN_KEY
    ]


#: Where a clip comes from and what it is: in both views, so search hits carry it.
CLIP_FIELDS = _fields(schema.CLIP_FIELDS)
#: The study's own metadata columns, declared in feature_store.yaml (batch_engine:
#: study_columns): in both views too, so searches filter on them and training sets hold them.
STUDY_FIELDS = _fields(declared_study_columns(REPO).fields)

# ---- registrations: what `hear-features register` writes -----------------------------

clip_registrations = _parquet_source("clip_registrations", "registrations.parquet")

clip_metadata = FeatureView(
    name=schema.REGISTRATIONS_VIEW,
    entities=[clip],
    ttl=timedelta(0),
    schema=[*CLIP_FIELDS, *_fields(schema.REGISTRATION_FIELDS), *STUDY_FIELDS],
    source=clip_registrations,
    online=True,
    description="Where each clip comes from and what it is labelled.",
)

# ---- embeddings: what `feast materialize` computes (HearEngine) ----------------------

clip_embeddings = _parquet_source("clip_embeddings", "embeddings.parquet")

cough_embeddings = FeatureView(
    name=schema.EMBEDDINGS_VIEW,
    entities=[clip],
    ttl=timedelta(0),
    schema=[
        Field(
            name="embedding",
            dtype=Array(Float32),
            vector_index=True,
            vector_length=schema.EMBEDDING_DIM,
            vector_search_metric="COSINE",
        ),
        Field(name="model_id", dtype=String),
        *CLIP_FIELDS,
        *STUDY_FIELDS,
    ],
    source=clip_embeddings,
    online=True,
    # The engine writes this table itself; Feast must not append its own rows to it.
    offline=False,
    description="512-d HeAR embedding of each clip, with the metadata search results show.",
)

# ---- on-demand: embed audio given with the request --------------------------------

clip_audio = RequestSource(
    name="clip_audio",
    schema=[
        Field(name="audio", dtype=Array(Float32)),  # mono samples, at most 2 s
        Field(name="sample_rate", dtype=Int32),  # Hz; resampled to 16 kHz
    ],
)

_OUTPUT = [Field(name="embedding", dtype=Array(Float32)), Field(name="model_id", dtype=String)]


@on_demand_feature_view(sources=[clip_audio], schema=_OUTPUT, mode="python")
def hear_embedding(inputs: dict[str, Any]) -> dict[str, Any]:
    """Embed request-time audio on read (nothing is stored)."""
    from hear_features.featurestore.transformation import embed_request_audio

    return embed_request_audio(inputs)


@on_demand_feature_view(
    entities=[clip],
    sources=[clip_audio],
    schema=_OUTPUT,
    mode="python",
    write_to_online_store=True,
)
def hear_embedding_on_write(inputs: dict[str, Any]) -> dict[str, Any]:
    """Embed audio when it is written (`FeatureStore.write_to_online_store`) and store it."""
    from hear_features.featurestore.transformation import embed_request_audio

    return embed_request_audio(inputs)
