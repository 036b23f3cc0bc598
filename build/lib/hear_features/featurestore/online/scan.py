"""Whole-view reads of the online store, for the explorer's map: every vector of a view
with its entity id, read from one snapshot, and the columns of its attribute table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from feast.infra.key_encoding_utils import deserialize_entity_key

from hear_features.featurestore.online.sqlite import ViewTable

#: (name, is text, distinct values, the values when few enough) of one scalar feature.
AttributeSummary = tuple[str, bool, int, list[str | float] | None]


@dataclass(frozen=True)
class VectorSnapshot:
    """Every stored vector of a view at one generation (the table's latest ``seq``)."""

    generation: int
    ids: np.ndarray  # (n,) int64 row ids, ascending (the FAISS ids)
    entity_ids: list[str]  # the entity's (single) join key value of each row
    vectors: np.ndarray  # (n, dim) float32


def vector_snapshot(table: ViewTable, key_version: int) -> VectorSnapshot:
    """Every (id, entity id, vector) of ``table`` and its generation, read in one read
    transaction, so the three agree even while a writer commits."""
    conn = table.conn
    conn.execute("BEGIN")
    try:
        seq = table.latest_seq()
        rows = (
            conn.execute(
                f'SELECT id, entity_key, vector FROM "{table.name}" '
                "WHERE vector IS NOT NULL ORDER BY id"
            ).fetchall()
            if table.exists()
            else []
        )
    finally:
        conn.execute("COMMIT")
    if not rows:
        return VectorSnapshot(seq, np.zeros(0, np.int64), [], np.zeros((0, 0), np.float32))
    entity_ids = []
    for _, key, _ in rows:
        proto = deserialize_entity_key(key, entity_key_serialization_version=key_version)
        value = proto.entity_values[0]
        entity_ids.append(str(getattr(value, value.WhichOneof("val") or "string_val")))
    ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    vectors = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), -1)
    return VectorSnapshot(seq, ids, entity_ids, vectors)


def attribute_summary(table: ViewTable, max_values: int) -> list[AttributeSummary]:
    """Per scalar feature of a vector view: (name, is text, distinct values, the values
    themselves when there are at most ``max_values``), ordered by name."""
    if not table.exists(attributes=True):
        return []
    conn, attrs = table.conn, table.attrs
    summary: list[AttributeSummary] = []
    groups = conn.execute(
        f'SELECT name, COUNT(DISTINCT text), COUNT(DISTINCT num), COUNT(text) FROM "{attrs}" '
        "GROUP BY name ORDER BY name"
    ).fetchall()
    for name, texts, numbers, text_rows in groups:
        is_text = text_rows > 0
        column = "text" if is_text else "num"
        distinct = int(texts if is_text else numbers)
        values = None
        if distinct <= max_values:
            values = [
                r[0]
                for r in conn.execute(
                    f'SELECT DISTINCT {column} FROM "{attrs}" WHERE name = ? AND {column} '
                    f"IS NOT NULL ORDER BY {column}",
                    (name,),
                )
            ]
        summary.append((name, is_text, distinct, values))
    return summary


def attribute_column(table: ViewTable, name: str) -> tuple[np.ndarray, list[str | float | None]]:
    """(ids, values) of one scalar feature over the whole table, ordered by id; a value
    is its text, else its number. Rows without the feature are absent."""
    if not table.exists(attributes=True):
        return np.zeros(0, np.int64), []
    rows = table.conn.execute(
        f'SELECT id, text, num FROM "{table.attrs}" WHERE name = ? ORDER BY id', (name,)
    ).fetchall()
    ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    return ids, [r[1] if r[1] is not None else r[2] for r in rows]
