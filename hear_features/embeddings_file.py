"""The Parquet file written by ``hear-features embed``: one row per 2 s window.

Columns: clip_id, recording_id, audio_uri, offset_s, duration_s, rms_db,
embedding (list<float32>, 512 values), model_id, created (timestamp[us, UTC]).
Microsecond timestamps, because DuckDB refuses tz-aware nanosecond Parquet timestamps.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hear_features.atomic import atomic_path
from hear_features.embedding import RecordingEmbeddings

CLIP_DURATION_S = 2.0
TIMESTAMP = pa.timestamp("us", tz="UTC")

EMBED_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("audio_uri", pa.string(), nullable=False),
        pa.field("offset_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("rms_db", pa.float32(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("created", TIMESTAMP, nullable=False),
    ]
)


def embedding_column(vectors: np.ndarray) -> pa.Array:
    """A float32 [n, d] matrix as a Parquet-friendly list<float32> column, without copies."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.size == 0:
        return pa.array([], pa.list_(pa.float32()))
    n, d = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))


def recording_table(rec: RecordingEmbeddings, model_id: str, created: dt.datetime) -> pa.Table:
    """The rows of one embedded recording."""
    n = len(rec.clips)
    return pa.table(
        {
            "clip_id": [c.clip_id for c in rec.clips],
            "recording_id": [c.recording_id for c in rec.clips],
            "audio_uri": [c.audio_uri for c in rec.clips],
            "offset_s": [c.offset_s for c in rec.clips],
            "duration_s": [CLIP_DURATION_S] * n,
            "rms_db": pa.array([c.rms_db for c in rec.clips], pa.float32()),  # set by iter_clips
            "embedding": embedding_column(rec.matrix()),
            "model_id": [model_id] * n,
            "created": pa.array([created] * n, TIMESTAMP),
        },
        schema=EMBED_SCHEMA,
    )


def write_embeddings(
    results: Iterable[RecordingEmbeddings],
    out: str | os.PathLike[str],
    model_id: str,
    *,
    rows_per_group: int = 8192,
) -> tuple[int, list[RecordingEmbeddings]]:
    """Stream successful recordings into ``out`` atomically; return (rows, failures)."""
    created = dt.datetime.now(dt.UTC)
    failures: list[RecordingEmbeddings] = []
    rows = 0
    pending: list[pa.Table] = []
    with atomic_path(Path(out)) as tmp, pq.ParquetWriter(tmp, EMBED_SCHEMA) as writer:
        for rec in results:
            if rec.error is not None:
                failures.append(rec)
                continue
            pending.append(recording_table(rec, model_id, created))
            if sum(t.num_rows for t in pending) >= rows_per_group:
                writer.write_table(pa.concat_tables(pending))
                rows += sum(t.num_rows for t in pending)
                pending.clear()
        if pending:
            writer.write_table(pa.concat_tables(pending))
            rows += sum(t.num_rows for t in pending)
    return rows, failures
