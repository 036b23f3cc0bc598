"""The SQLite side of the online store: one table per feature view, one row per entity.

Columns: a stable integer ``id`` (the FAISS id of the entity's vector), the serialized
entity key, the entity's non-vector features (encoded by
:mod:`hear_features.featurestore.feature_codec`), the vector as raw float32 bytes (views
with a vector index only), timestamps, and ``seq``: the number of the write batch that
last changed the row. An index that has applied every change up
to some ``seq`` can catch up by reading the rows with a larger one.

Views with a vector index also get an attribute table (id, name, text, num) with their
scalar features, so that metadata filters become SQL and then FAISS ID selectors.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from feast.protos.feast.types.Value_pb2 import FloatList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from hear_features.featurestore.feature_codec import Attribute, decode, decode_plain

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_CHUNK = 500


@dataclass(frozen=True)
class EntityRow:
    """One entity's row, ready to write: features already encoded, and the filterable
    (name, text, number) attributes for views with a vector index."""

    key: bytes
    payload: bytes
    vector: np.ndarray | None
    event_ts: dt.datetime
    created_ts: dt.datetime | None
    attributes: list[Attribute]


@dataclass(frozen=True)
class StoredRow:
    id: int
    key: bytes
    features: dict[str, Any]  # Feast values, or plain Python when read with plain=True
    event_ts: dt.datetime


def micros(ts: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (naive timestamps are UTC, as Feast says)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return (ts - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> dt.datetime:
    return _EPOCH + value * _MICROSECOND


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we open transactions explicitly), WAL journal."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def create(conn: sqlite3.Connection, table: str, *, with_vectors: bool) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS "{table}" (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                entity_key BLOB NOT NULL UNIQUE,
                features BLOB NOT NULL,
                vector BLOB,
                event_ts INTEGER NOT NULL,
                created_ts INTEGER,
                seq INTEGER NOT NULL
            )"""
    )
    conn.execute(f'CREATE INDEX IF NOT EXISTS "{table}__seq" ON "{table}" (seq)')
    if with_vectors:
        attrs = f"{table}__attrs"
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{attrs}" '
            "(id INTEGER NOT NULL, name TEXT NOT NULL, text TEXT, num REAL)"
        )
        conn.execute(f'CREATE INDEX IF NOT EXISTS "{attrs}__text" ON "{attrs}" (name, text)')
        conn.execute(f'CREATE INDEX IF NOT EXISTS "{attrs}__num" ON "{attrs}" (name, num)')
        conn.execute(f'CREATE INDEX IF NOT EXISTS "{attrs}__id" ON "{attrs}" (id)')


def drop(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    conn.execute(f'DROP TABLE IF EXISTS "{table}__attrs"')


def exists(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def write(
    conn: sqlite3.Connection, table: str, rows: Sequence[EntityRow], *, with_vectors: bool
) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """Upsert ``rows`` in one transaction; the newest event timestamp wins.

    Returns the batch's ``seq`` and the (id, vector) pairs that were actually written
    (rows older than what is stored are skipped), for the caller's index.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        create(conn, table, with_vectors=with_vectors)
        seq = int(conn.execute(f'SELECT COALESCE(MAX(seq), 0) + 1 FROM "{table}"').fetchone()[0])
        conn.executemany(
            f"""INSERT INTO "{table}" (entity_key, features, vector, event_ts, created_ts, seq)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (entity_key) DO UPDATE SET
                    features = excluded.features,
                    vector = excluded.vector,
                    event_ts = excluded.event_ts,
                    created_ts = excluded.created_ts,
                    seq = excluded.seq
                WHERE excluded.event_ts >= "{table}".event_ts""",
            [
                (
                    r.key,
                    r.payload,
                    None
                    if r.vector is None
                    else np.ascontiguousarray(r.vector, np.float32).tobytes(),
                    micros(r.event_ts),
                    None if r.created_ts is None else micros(r.created_ts),
                    seq,
                )
                for r in rows
            ],
        )
        written: list[tuple[int, np.ndarray]] = []
        if with_vectors:
            cursor = conn.execute(
                f'SELECT id, entity_key FROM "{table}" WHERE seq = ? AND vector IS NOT NULL',
                (seq,),
            )
            by_key = {r.key: r for r in rows}
            stored = [(int(i), by_key[key]) for i, key in cursor]
            written = [(i, np.asarray(r.vector, np.float32)) for i, r in stored]
            _write_attributes(conn, table, [(i, r.attributes) for i, r in stored])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return seq, written


def _write_attributes(
    conn: sqlite3.Connection, table: str, rows: list[tuple[int, list[Attribute]]]
) -> None:
    """Refresh the filterable scalar features of the rows just written."""
    attrs = f"{table}__attrs"
    for chunk in _chunks(rows):
        ids = [i for i, _ in chunk]
        conn.execute(f'DELETE FROM "{attrs}" WHERE id IN ({",".join("?" * len(ids))})', ids)
        conn.executemany(
            f'INSERT INTO "{attrs}" (id, name, text, num) VALUES (?, ?, ?, ?)',
            [(i, *attribute) for i, attributes in chunk for attribute in attributes],
        )


def vector_value(blob: bytes) -> ValueProto:
    """A stored float32 vector as the Feast value of an Array(Float32) feature."""
    return ValueProto(float_list_val=FloatList(val=np.frombuffer(blob, dtype=np.float32).tolist()))


def changed_since(
    conn: sqlite3.Connection, table: str, seq: int
) -> list[tuple[int, int, np.ndarray]]:
    """(id, seq, vector) of every row with a vector changed after ``seq``."""
    cursor = conn.execute(
        f'SELECT id, seq, vector FROM "{table}" WHERE seq > ? AND vector IS NOT NULL ORDER BY id',
        (seq,),
    )
    return [(i, s, np.frombuffer(v, dtype=np.float32)) for i, s, v in cursor]


def model_id_of(conn: sqlite3.Connection, table: str, feature: str = "model_id") -> str:
    """The model that made a table's vectors, from its ``model_id`` feature.

    ``unknown`` when the view has no such feature; several models are listed joined
    by ``+`` (the batch engine refuses to create such a table).
    """
    if not exists(conn, f"{table}__attrs"):
        return "unknown"
    rows = conn.execute(
        f'SELECT DISTINCT text FROM "{table}__attrs" WHERE name = ? ORDER BY text', (feature,)
    ).fetchall()
    return "+".join(r[0] for r in rows if r[0]) or "unknown"


def max_seq(conn: sqlite3.Connection, table: str) -> int:
    try:
        return int(conn.execute(f'SELECT COALESCE(MAX(seq), 0) FROM "{table}"').fetchone()[0])
    except sqlite3.OperationalError:  # no such table (yet)
        return 0


def read_by_keys(
    conn: sqlite3.Connection,
    table: str,
    keys: Sequence[bytes],
    vector_field: str | None,
    wanted: Sequence[str] | None = None,
) -> dict[bytes, StoredRow]:
    """Rows by serialized entity key (see :func:`read_by_ids`)."""
    rows = _read(conn, table, "entity_key", keys, vector_field, wanted)
    return {row.key: row for row in rows}


def read_by_ids(
    conn: sqlite3.Connection,
    table: str,
    ids: Sequence[int],
    vector_field: str | None,
    wanted: Sequence[str] | None = None,
    *,
    plain: bool = False,
) -> dict[int, StoredRow]:
    """Rows by id, with the ``wanted`` features (all when None). The vector, named
    ``vector_field``, is decoded only when wanted: 512 floats cost more than a search.
    ``plain``: features as plain Python values instead of Feast ``Value`` messages."""
    rows = _read(conn, table, "id", ids, vector_field, wanted, plain)
    return {row.id: row for row in rows}


def _read(
    conn: sqlite3.Connection,
    table: str,
    column: str,
    values: Sequence[object],
    vector_field: str | None,
    wanted: Sequence[str] | None,
    plain: bool = False,
) -> list[StoredRow]:
    found: list[StoredRow] = []
    if not values or not exists(conn, table):
        return found
    with_vector = vector_field is not None and (not wanted or vector_field in wanted)
    for chunk in _chunks(list(values)):
        marks = ",".join("?" * len(chunk))
        cursor = conn.execute(
            f"SELECT id, entity_key, features, {'vector' if with_vector else 'NULL'}, event_ts "
            f'FROM "{table}" WHERE {column} IN ({marks})',
            chunk,
        )
        for row_id, key, blob, vector, event_ts in cursor:
            features = decode_plain(blob, wanted) if plain else decode(blob, wanted)
            if with_vector and vector is not None:
                features[vector_field] = (  # type: ignore[index]
                    np.frombuffer(vector, np.float32).tolist() if plain else vector_value(vector)
                )
            found.append(StoredRow(int(row_id), key, features, from_micros(event_ts)))
    return found


def all_vectors(conn: sqlite3.Connection, table: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Every (id, vector) of a table and the highest seq among them, for a full build."""
    cursor = conn.execute(
        f'SELECT id, vector, seq FROM "{table}" WHERE vector IS NOT NULL ORDER BY id'
    )
    ids: list[int] = []
    blobs: list[bytes] = []
    top = 0
    for row_id, blob, seq in cursor:
        ids.append(row_id)
        blobs.append(blob)
        top = max(top, seq)
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), max_seq(conn, table)
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
    return np.asarray(ids, np.int64), matrix, max(top, max_seq(conn, table))


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
