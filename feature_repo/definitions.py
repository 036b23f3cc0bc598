"""Feast definitions for hear-features: the clip entity, its views and transformations.

Only definitions live in this folder: `feast apply` imports every .py file here.
Data paths are absolute (derived from this file), because Feast resolves a FileSource's
relative path against the current directory, not the repository.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float32, Float64, Int32, String

DATA = Path(__file__).resolve().parent / "data"

clip = Entity(
    name="clip",
    join_keys=["clip_id"],
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


#: Where a clip comes from and what it is: in both views, so search hits carry it.
CLIP_FIELDS = [
    Field(name="recording_id", dtype=String),
    Field(name="subject_id", dtype=String),
    Field(name="label", dtype=String),
    Field(name="dataset", dtype=String),
    Field(name="device", dtype=String),
    Field(name="audio_uri", dtype=String),
    Field(name="offset_s", dtype=Float64),
]

# ---- registrations: what `hear-features register` writes -----------------------------

clip_registrations = _parquet_source("clip_registrations", "registrations.parquet")

clip_metadata = FeatureView(
    name="clip_metadata",
    entities=[clip],
    ttl=timedelta(0),
    schema=[
        *CLIP_FIELDS,
        Field(name="duration_s", dtype=Float64),
        Field(name="sample_rate", dtype=Int32),
        Field(name="content_hash", dtype=String),
    ],
    source=clip_registrations,
    online=True,
    description="Where each clip comes from and what it is labelled.",
)

# ---- embeddings: what `feast materialize` computes (HearEngine) ----------------------

clip_embeddings = _parquet_source("clip_embeddings", "embeddings.parquet")

cough_embeddings = FeatureView(
    name="cough_embeddings",
    entities=[clip],
    ttl=timedelta(0),
    schema=[
        Field(
            name="embedding",
            dtype=Array(Float32),
            vector_index=True,
            vector_length=512,
            vector_search_metric="COSINE",
        ),
        Field(name="model_id", dtype=String),
        *CLIP_FIELDS,
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
