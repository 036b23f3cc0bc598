"""The facts every layer shares, each defined once: rates, sizes, names and table columns.

Audio is 16 kHz mono; HeAR reads 2 s windows of it (:data:`CLIP_SAMPLES`) and answers
with :data:`EMBEDDING_DIM` floats. A clip is one such window of a recording, keyed by
``clip_id``. Two offline tables describe clips (Parquet, timestamps in microseconds UTC,
because DuckDB refuses tz-aware nanosecond Parquet timestamps):

* registrations (:data:`REGISTRATION_SCHEMA`): one row per (clip, registration), written
  by ``hear-features register``;
* embeddings (:data:`EMBEDDING_SCHEMA`): one row per registration row with its vector,
  written by ``feast materialize``.

``hear-features embed`` writes a third, standalone file (:data:`EMBED_FILE_SCHEMA`).

The Feast views over the two tables are named :data:`REGISTRATIONS_VIEW` and
:data:`EMBEDDINGS_VIEW` by default; ``feature_store.yaml`` may name others
(``registrations_view`` and ``embeddings_view`` in its ``batch_engine`` section).
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

#: HeAR's input rate, in Hz.
SAMPLE_RATE: Final = 16_000
#: Samples in one HeAR input window: 2 s at 16 kHz.
CLIP_SAMPLES: Final = 32_000
#: Seconds in one clip.
CLIP_SECONDS: Final = CLIP_SAMPLES / SAMPLE_RATE
#: Floats in one HeAR embedding.
EMBEDDING_DIM: Final = 512

#: The Feast entity and its join key.
ENTITY: Final = "clip"
JOIN_KEY: Final = "clip_id"
#: Default Feast view names (``feature_store.yaml`` may choose others).
REGISTRATIONS_VIEW: Final = "clip_metadata"
EMBEDDINGS_VIEW: Final = "cough_embeddings"

#: Column and feature names used by code (not only by schemas).
EMBEDDING: Final = "embedding"
MODEL_ID: Final = "model_id"
EVENT_TIMESTAMP: Final = "event_timestamp"
CREATED: Final = "created"

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
VECTOR: Final = pa.list_(pa.float32())

#: Metadata a user may give per recording (manifest columns, CLI options).
USER_METADATA: Final = ("subject_id", "label", "dataset", "device")

#: Where a clip comes from and what it is: in both tables and both views.
CLIP_FIELDS: Final = (
    pa.field(JOIN_KEY, pa.string(), nullable=False),
    pa.field("recording_id", pa.string(), nullable=False),
    *(pa.field(name, pa.string()) for name in USER_METADATA),
    pa.field("audio_uri", pa.string(), nullable=False),
    pa.field("offset_s", pa.float64(), nullable=False),
)
#: The same, as feature names of the views (the join key is not a feature).
CLIP_FEATURES: Final = tuple(f.name for f in CLIP_FIELDS if f.name != JOIN_KEY)

#: What a registration adds to the clip fields.
REGISTRATION_FIELDS: Final = (
    pa.field("duration_s", pa.float64(), nullable=False),
    pa.field("sample_rate", pa.int32(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
)

REGISTRATION_SCHEMA: Final = pa.schema(
    [
        *CLIP_FIELDS,
        *REGISTRATION_FIELDS,
        pa.field(EVENT_TIMESTAMP, TIMESTAMP, nullable=False),
        pa.field(CREATED, TIMESTAMP, nullable=False),
    ]
)

EMBEDDING_SCHEMA: Final = pa.schema(
    [
        *CLIP_FIELDS,
        pa.field(EMBEDDING, VECTOR, nullable=False),
        pa.field(MODEL_ID, pa.string(), nullable=False),
        pa.field(EVENT_TIMESTAMP, TIMESTAMP, nullable=False),
        pa.field(CREATED, TIMESTAMP, nullable=False),
    ]
)

#: The file of ``hear-features embed``: one row per window, no registration needed.
EMBED_FILE_SCHEMA: Final = pa.schema(
    [
        pa.field(JOIN_KEY, pa.string(), nullable=False),
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("audio_uri", pa.string(), nullable=False),
        pa.field("offset_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("rms_db", pa.float32(), nullable=False),
        pa.field(EMBEDDING, VECTOR, nullable=False),
        pa.field(MODEL_ID, pa.string(), nullable=False),
        pa.field(CREATED, TIMESTAMP, nullable=False),
    ]
)

#: The features a search hit shows by default (not the vector: 512 floats).
HIT_FEATURES: Final = (*CLIP_FEATURES, MODEL_ID)
#: The features of a training-set row.
TRAINING_FEATURES: Final = (EMBEDDING, MODEL_ID, *CLIP_FEATURES)

#: Columns that answers add to stored features: search hits, training-set rows, the API's
#: stand-in for a server path.
RESULT_COLUMNS: Final = ("distance", "score", "seed_id", "rank", "path")
#: Names a study's own columns may not take (:mod:`hear_features.study`), compared
#: without case: every column of the tables, what answers add, and the request fields of
#: the on-demand transformations.
BUILT_IN_NAMES: Final = frozenset(
    {
        *REGISTRATION_SCHEMA.names,
        *EMBEDDING_SCHEMA.names,
        *EMBED_FILE_SCHEMA.names,
        *RESULT_COLUMNS,
        "audio",
        "entity_key",
    }
)
