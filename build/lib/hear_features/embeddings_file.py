"""The table written by ``hear-features embed`` (Parquet, CSV or JSON lines): one row
per 2 s window.

Its columns are :data:`hear_features.schema.EMBED_FILE_SCHEMA`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from hear_features.embedding import RecordingEmbeddings
from hear_features.outputs import TableWriter
from hear_features.schema import CLIP_SECONDS, EMBED_FILE_SCHEMA, TIMESTAMP


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
            "duration_s": [CLIP_SECONDS] * n,
            "rms_db": pa.array([c.rms_db for c in rec.clips], pa.float32()),  # set by iter_clips
            "embedding": embedding_column(rec.matrix()),
            "model_id": [model_id] * n,
            "created": pa.array([created] * n, TIMESTAMP),
        },
        schema=EMBED_FILE_SCHEMA,
    )


def write_embeddings(
    results: Iterable[RecordingEmbeddings],
    out: str | os.PathLike[str],
    model_id: str,
    *,
    rows_per_group: int = 8192,
) -> tuple[int, list[RecordingEmbeddings]]:
    """Stream successful recordings into ``out`` atomically, in the format its ending names
    (:mod:`hear_features.outputs`: .parquet, .csv or .jsonl); return (rows, failures)."""
    created = dt.datetime.now(dt.UTC)
    failures: list[RecordingEmbeddings] = []
    rows = 0
    pending: list[pa.Table] = []
    with TableWriter(out, EMBED_FILE_SCHEMA) as writer:
        for rec in results:
            if rec.error is not None:
                failures.append(rec)
                continue
            pending.append(recording_table(rec, model_id, created))
            if sum(t.num_rows for t in pending) >= rows_per_group:
                writer.write(pa.concat_tables(pending))
                rows += sum(t.num_rows for t in pending)
                pending.clear()
        if pending:
            writer.write(pa.concat_tables(pending))
            rows += sum(t.num_rows for t in pending)
    return rows, failures
