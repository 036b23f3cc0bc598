"""The SQLite side of the online store: one table per feature view, one row per entity.

Columns: a stable integer ``id`` (the FAISS id of the entity's vector), the serialized
entity key, the entity's non-vector features (encoded by
:mod:`hear_features.featurestore.online.codec`), the vector as raw float32 bytes (views
with a vector index only), timestamps, and ``seq``: the number of the write batch that
last changed the row. An index that has applied every change up to some ``seq`` catches
up by reading the rows with a larger one (:class:`ViewTable` is the index's
:class:`~hear_features.index.sync.ChangeFeed`).

Views with a vector index also get an attribute table (id, name, text, num) with their
scalar features; :mod:`hear_features.featurestore.online.attribute_filter` turns Feast's
metadata filters into SQL over it, whose answer becomes a FAISS ID selector.
Connections and transactions: :mod:`~hear_features.featurestore.online.database`.

Rows are deleted only by ``hear-features forget``
(:func:`~hear_features.featurestore.online.erasure.delete`): the row and
its attributes go, and a removal table (``<table>__removed``: id, seq) tells indexes
which ids to drop; the removal takes a ``seq`` of its own, so every reader notices it.
Ids are never reused (``AUTOINCREMENT``). Deletes zero what they free (``secure_delete``),
and :func:`~hear_features.featurestore.online.database.vacuum` then empties the
write-ahead log, so no freed page or log frame holds the deleted bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from feast.filter_models import FilterType
from feast.protos.feast.types.Value_pb2 import FloatList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from hear_features.featurestore.online.attribute_filter import AttributeFilter, chunked
from hear_features.featurestore.online.codec import Attribute, decode, decode_plain
from hear_features.featurestore.online.database import connection, read_snapshot
from hear_features.index.sync import FrozenVectors

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class RowToWrite:
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


@dataclass(frozen=True)
class Written:
    """What one write batch changed: its ``seq`` and the (id, vector) pairs it stored
    (rows older than what was stored are skipped)."""

    seq: int
    ids: np.ndarray
    vectors: np.ndarray


def micros(ts: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (naive timestamps are UTC, as Feast says)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return (ts - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> dt.datetime:
    return _EPOCH + value * _MICROSECOND


def vector_value(blob: bytes) -> ValueProto:
    """A stored float32 vector as the Feast value of an Array(Float32) feature."""
    return ValueProto(float_list_val=FloatList(val=np.frombuffer(blob, dtype=np.float32).tolist()))


class ViewTable:
    """One feature view's table (and attribute table), on this thread's connection."""

    def __init__(self, database: Path, name: str) -> None:
        self.database = database
        self.name = name
        self.attrs = f"{name}__attrs"
        self.removed = f"{name}__removed"

    @property
    def conn(self) -> sqlite3.Connection:
        return connection(self.database)

    # ---- schema -----------------------------------------------------------------------

    def create(self, *, with_vectors: bool) -> None:
        conn, table, attrs = self.conn, self.name, self.attrs
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
        self.create_removed()
        if with_vectors:
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{attrs}" '
                "(id INTEGER NOT NULL, name TEXT NOT NULL, text TEXT, num REAL)"
            )
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{attrs}__text" ON "{attrs}" (name, text)')
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{attrs}__num" ON "{attrs}" (name, num)')
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{attrs}__id" ON "{attrs}" (id)')

    def create_removed(self) -> None:
        self.conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{self.removed}" '
            "(id INTEGER PRIMARY KEY, seq INTEGER NOT NULL)"
        )
        self.conn.execute(
            f'CREATE INDEX IF NOT EXISTS "{self.removed}__seq" ON "{self.removed}" (seq)'
        )

    def drop(self) -> None:
        for name in (self.name, self.attrs, self.removed):
            self.conn.execute(f'DROP TABLE IF EXISTS "{name}"')

    def exists(self, *, attributes: bool = False) -> bool:
        """Whether the table (or its attribute table) has been created."""
        name = self.attrs if attributes else self.name
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    # ---- writes -----------------------------------------------------------------------

    def write(self, rows: Sequence[RowToWrite], *, with_vectors: bool) -> Written:
        """Upsert ``rows`` in one transaction; the newest event timestamp wins, whatever
        order writes arrive in (an older event never overwrites a newer one)."""
        conn, table = self.conn, self.name
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.create(with_vectors=with_vectors)
            seq = self.latest_seq() + 1
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
                        None if r.vector is None else np.asarray(r.vector, np.float32).tobytes(),
                        micros(r.event_ts),
                        None if r.created_ts is None else micros(r.created_ts),
                        seq,
                    )
                    for r in rows
                ],
            )
            stored: list[tuple[int, RowToWrite]] = []
            if with_vectors:
                cursor = conn.execute(
                    f'SELECT id, entity_key FROM "{table}" WHERE seq = ? AND vector IS NOT NULL',
                    (seq,),
                )
                by_key = {r.key: r for r in rows}
                stored = [(int(i), by_key[key]) for i, key in cursor]
                self._write_attributes(stored)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        ids = np.array([i for i, _ in stored], np.int64)
        vectors = [np.asarray(r.vector, np.float32) for _, r in stored]
        return Written(seq, ids, np.stack(vectors) if vectors else np.zeros((0, 0), np.float32))

    def _write_attributes(self, rows: list[tuple[int, RowToWrite]]) -> None:
        """Refresh the filterable scalar features of the rows just written."""
        for chunk in chunked(rows):
            ids = [i for i, _ in chunk]
            self.conn.execute(
                f'DELETE FROM "{self.attrs}" WHERE id IN ({",".join("?" * len(ids))})', ids
            )
            self.conn.executemany(
                f'INSERT INTO "{self.attrs}" (id, name, text, num) VALUES (?, ?, ?, ?)',
                [(i, *attribute) for i, row in chunk for attribute in row.attributes],
            )

    # ---- reads ------------------------------------------------------------------------

    def read(
        self,
        by: Literal["entity_key", "id"],
        values: Sequence[bytes] | Sequence[int],
        vector_field: str | None,
        wanted: Sequence[str] | None,
        *,
        plain: bool = False,
    ) -> list[StoredRow]:
        """The rows whose serialized entity key (or id) is in ``values``, with the
        ``wanted`` features (all when None). The vector, named ``vector_field``, is decoded
        only when wanted: 512 floats cost more than a search. ``plain``: features as plain
        Python values instead of Feast ``Value`` messages."""
        found: list[StoredRow] = []
        if not values:
            return found
        with_vector = vector_field is not None and (not wanted or vector_field in wanted)
        keep = frozenset(wanted) if wanted else None
        for chunk in chunked(list(values)):
            try:
                cursor = self.conn.execute(
                    f"SELECT id, entity_key, features, {'vector' if with_vector else 'NULL'}, "
                    f'event_ts FROM "{self.name}" WHERE {by} IN ({",".join("?" * len(chunk))})',
                    chunk,
                )
            except sqlite3.OperationalError:
                if self.exists():
                    raise
                return found  # nothing written to this view yet
            for row_id, key, blob, vector, event_ts in cursor:
                features = decode_plain(blob, keep) if plain else decode(blob, keep)
                if with_vector and vector is not None:
                    features[vector_field] = (  # type: ignore[index]
                        np.frombuffer(vector, np.float32).tolist()
                        if plain
                        else vector_value(vector)
                    )
                found.append(StoredRow(int(row_id), key, features, from_micros(event_ts)))
        return found

    # ---- the change feed of the vector index --------------------------------------------

    def latest_seq(self, conn: sqlite3.Connection | None = None) -> int:
        """The highest ``seq`` of a write or a removal (0 before any), read on ``conn``
        (default: this thread's connection)."""
        conn = conn or self.conn
        rows, removed = f'"{self.name}"', f'"{self.removed}"'
        try:
            return int(
                conn.execute(
                    f"SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM {rows}), "
                    f"(SELECT COALESCE(MAX(seq), 0) FROM {removed}))"
                ).fetchone()[0]
            )
        except sqlite3.OperationalError:  # no such table (yet), or one made before removals
            try:
                return int(conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {rows}").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    def changed_since(self, seq: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The rows with a vector changed after ``seq``, and the latest ``seq`` of the same
        snapshot (so nothing committed meanwhile is counted as seen)."""
        with read_snapshot(self.conn):
            ids, vectors, _ = self._vectors("seq > ?", (seq,))
            return ids, vectors, self.latest_seq()

    def removed_since(self, seq: int) -> np.ndarray:
        """The ids removed after ``seq`` (int64)."""
        try:
            rows = self.conn.execute(
                f'SELECT id FROM "{self.removed}" WHERE seq > ?', (seq,)
            ).fetchall()
        except sqlite3.OperationalError:  # no removal table: nothing was ever removed
            return np.zeros(0, np.int64)
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    @contextlib.contextmanager
    def frozen(self, chunk_rows: int) -> Iterator[FrozenVectors]:
        """The vectors as of now, in chunks of ``chunk_rows`` by id (keyset pages on the
        primary key), on a connection of its own holding one read transaction: WAL keeps
        its snapshot while other connections write, so every pass reads the same rows."""
        if not self.exists():
            yield FrozenVectors(0, 0, 0, lambda: iter(()))
            return
        conn = sqlite3.connect(self.database, timeout=30.0, isolation_level=None)
        table = self.name
        try:
            conn.execute("BEGIN")
            rows, dim = conn.execute(
                f'SELECT COUNT(vector), MAX(length(vector)) / 4 FROM "{table}"'
            ).fetchone()
            seq = self.latest_seq(conn)  # removals count: an index must not replay them

            def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                last = -1
                while True:
                    page = conn.execute(
                        f'SELECT id, vector FROM "{table}" WHERE id > ? AND vector IS NOT NULL '
                        "ORDER BY id LIMIT ?",
                        (last, chunk_rows),
                    ).fetchall()
                    if not page:
                        return
                    last = page[-1][0]
                    yield (
                        np.fromiter((r[0] for r in page), np.int64, len(page)),
                        np.frombuffer(b"".join(r[1] for r in page), np.float32).reshape(
                            len(page), -1
                        ),
                    )

            yield FrozenVectors(int(rows), int(dim or 0), int(seq), chunks)
        finally:
            conn.close()  # ends the read transaction

    def _vectors(self, where: str, params: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray, int]:
        """Ids (ascending), vectors and the highest ``seq`` of the rows meeting ``where``.

        Sorted here, not by SQL: with ``ORDER BY id`` SQLite walks the whole table in
        primary-key order rather than the ``seq`` index (0.11 s at 100k rows for a catch-up
        that finds nothing, growing with the table)."""
        if not self.exists():
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), 0
        cursor = self.conn.execute(
            f'SELECT id, vector, seq FROM "{self.name}" WHERE {where} AND vector IS NOT NULL',
            params,
        )
        ids: list[int] = []
        blobs: list[bytes] = []
        top = 0
        for row_id, blob, seq in cursor:
            ids.append(row_id)
            blobs.append(blob)
            top = max(top, seq)
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), top
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
        order = np.argsort(np.asarray(ids, np.int64), kind="stable")
        return np.asarray(ids, np.int64)[order], matrix[order], top

    def model_id(self, feature: str = "model_id") -> str:
        """The model that made the table's vectors, from its ``model_id`` feature.

        ``unknown`` when the view has no such feature; several models are listed joined
        by ``+`` (the batch engine refuses to create such a table).
        """
        if not self.exists(attributes=True):
            return "unknown"
        rows = self.conn.execute(
            f'SELECT DISTINCT text FROM "{self.attrs}" WHERE name = ? ORDER BY text', (feature,)
        ).fetchall()
        return "+".join(r[0] for r in rows if r[0]) or "unknown"

    # ---- metadata filters -----------------------------------------------------------------

    def allowed_ids(self, filters: FilterType) -> np.ndarray | None:
        """The ids passing ``filters`` (None when there is no filter)."""
        if filters is None:
            return None
        if not self.exists(attributes=True):
            return np.zeros(0, dtype=np.int64)
        sql, params = AttributeFilter(self.name, self.attrs).translate(filters)
        return np.fromiter((row[0] for row in self.conn.execute(sql, params)), dtype=np.int64)
