"""The two offline tables of the feature store, as Parquet files.

``registrations``: one row per (clip, registration), written by ``hear-features register``.
``embeddings``: one row per registration row with its vector, written by ``feast
materialize`` through :class:`~hear_features.featurestore.engine.HearEngine`.

Timestamps are microseconds in UTC (DuckDB refuses tz-aware nanosecond Parquet
timestamps). Writes replace the whole file atomically, so readers, including a DuckDB
query running at the same time, see the old table or the new one, never a mix.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hear_features.atomic import atomic_path

TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Columns that describe where a clip comes from and what it is; shared by both tables.
METADATA_FIELDS = [
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("recording_id", pa.string(), nullable=False),
    pa.field("subject_id", pa.string()),
    pa.field("label", pa.string()),
    pa.field("dataset", pa.string()),
    pa.field("device", pa.string()),
    pa.field("audio_uri", pa.string(), nullable=False),
    pa.field("offset_s", pa.float64(), nullable=False),
]

REGISTRATION_SCHEMA = pa.schema(
    [
        *METADATA_FIELDS,
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("created", TIMESTAMP, nullable=False),
    ]
)

EMBEDDING_SCHEMA = pa.schema(
    [
        *METADATA_FIELDS,
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("created", TIMESTAMP, nullable=False),
    ]
)

#: Metadata a user may give per recording (manifest columns, CLI options).
USER_METADATA = ("subject_id", "label", "dataset", "device")


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    """The table at ``path``, or an empty one with ``schema`` when there is no file yet."""
    if not path.exists():
        return schema.empty_table()
    table = pq.read_table(path)
    if not table.schema.equals(schema, check_metadata=False):
        table = table.select(schema.names).cast(schema)
    return table


def write_table(path: Path, table: pa.Table) -> None:
    """Replace ``path`` with ``table`` atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")  # zstd: 8% smaller, 2.5x slower


def ensure_table(path: Path, schema: pa.Schema) -> None:
    """Create an empty table at ``path`` when none exists (Feast needs the file to exist)."""
    if not path.exists():
        write_table(path, schema.empty_table())


def append_rows(path: Path, rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Append ``rows`` to the table at ``path`` (a full atomic rewrite); return the result."""
    existing = read_table(path, schema)
    combined = pa.concat_tables([existing, rows.select(schema.names).cast(schema)])
    write_table(path, combined)
    return combined
