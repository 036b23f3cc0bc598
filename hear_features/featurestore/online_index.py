"""The vector index behind a feature view, kept in step with its SQLite table.

SQLite is the source of truth; the FAISS index is a cache of its vectors that can
always be rebuilt. Each saved index records the last SQLite ``seq`` it contains, so a
process that loads it (or holds it in memory while another process writes) catches up
by applying only the rows changed since. Saving happens when enough changes have piled
up, and when the batch engine finishes a materialisation (:meth:`IndexHandle.checkpoint`).

Also here: :class:`AttributeFilter`, which turns Feast's metadata filters into SQL over
the attribute table, whose answer becomes a FAISS ID selector.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
from feast.filter_models import ComparisonFilter, CompoundFilter, FilterTranslator, FilterType

from hear_features.errors import InputShapeError
from hear_features.featurestore import online_tables
from hear_features.index import IndexConfig, IndexLoadError, SearchResult, VectorIndex, load, save

log = logging.getLogger(__name__)


class IndexHandle:
    """One feature view's index in this process: load, catch up, search, save."""

    def __init__(self, table: str, folder: Path, config: IndexConfig) -> None:
        self.table = table
        self.folder = folder
        self.config = config
        self.index: VectorIndex | None = None
        self.applied_seq = 0
        self.saved_seq = 0
        self.built_size = 0  # vectors the index was built (trained) for
        self.model_id = "unknown"
        self._lock = threading.RLock()

    # ---- keeping current --------------------------------------------------------------

    def current(self, conn: sqlite3.Connection) -> VectorIndex | None:
        """The index with every committed change applied (None when there are no vectors).

        Costs one indexed ``MAX(seq)`` query when nothing changed.
        """
        with self._lock:
            latest = online_tables.max_seq(conn, self.table)
            if self.index is None:
                self._open(conn)
            elif latest > self.applied_seq:
                self._catch_up(conn)
            return self.index

    def stored_dim(self, conn: sqlite3.Connection) -> int | None:
        """The length of the stored vectors (None while there are none)."""
        index = self.current(conn)
        return None if index is None else index.dim

    def apply(
        self, conn: sqlite3.Connection, seq: int, written: list[tuple[int, np.ndarray]]
    ) -> None:
        """A write batch of this process: apply it in memory, save when it is worth it."""
        with self._lock:
            if self.index is None or seq != self.applied_seq + 1:
                self.current(conn)  # first use, or another process wrote in between
            elif written:
                ids = np.array([i for i, _ in written], np.int64)
                self.index.upsert(ids, np.stack([v for _, v in written]))
                self.applied_seq = seq
                self._maybe_grow(conn)
            else:
                self.applied_seq = seq
            if self.index is not None and self._unsaved() >= max(1_000, len(self.index) // 20):
                self.checkpoint()

    def checkpoint(self) -> None:
        """Save the index if it holds changes that are not on disk yet."""
        with self._lock:
            if self.index is None or self.applied_seq == self.saved_seq:
                return
            save(
                self.index,
                self.folder,
                model_id=self.model_id,
                source_watermark=self.applied_seq,
                extra={"built_size": self.built_size},
            )
            self.saved_seq = self.applied_seq

    def _unsaved(self) -> int:
        return self.applied_seq - self.saved_seq if self.index is not None else 0

    def _open(self, conn: sqlite3.Connection) -> None:
        """Load the saved index if it matches the data, else rebuild it from SQLite."""
        self.model_id = online_tables.model_id_of(conn, self.table)
        if (self.folder / "manifest.json").exists():
            try:
                self.index, generation, manifest = load(
                    self.folder, self.config, model_id=self.model_id
                )
                self.applied_seq = self.saved_seq = generation.source_watermark
                self.built_size = int(manifest.extra.get("built_size", len(self.index)))
                self._catch_up(conn)
                return
            except IndexLoadError as exc:
                log.warning("rebuilding the index of %s from SQLite: %s", self.table, exc)
        self._rebuild(conn)

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        assert self.index is not None
        changed = online_tables.changed_since(conn, self.table, self.applied_seq)
        if changed:
            if self.index.mmapped:  # a memory-mapped index is read-only
                self._rebuild(conn)
                return
            self.index.upsert(
                np.array([i for i, _, _ in changed], np.int64), np.stack([v for _, _, v in changed])
            )
            self.applied_seq = max(s for _, s, _ in changed)
        self.applied_seq = max(self.applied_seq, online_tables.max_seq(conn, self.table))
        self._maybe_grow(conn)

    def _rebuild(self, conn: sqlite3.Connection) -> None:
        ids, vectors, seq = online_tables.all_vectors(conn, self.table)
        self.model_id = online_tables.model_id_of(conn, self.table)
        self.index = VectorIndex.build(ids, vectors, self.config) if len(ids) else None
        self.built_size = len(ids)
        self.applied_seq = seq
        self.saved_seq = 0
        if self.index is not None:
            self.checkpoint()

    def _maybe_grow(self, conn: sqlite3.Connection) -> None:
        """With ``factory: auto``, a flat index that outgrew the threshold, or an IVF index
        grown 4x past the size it was trained for, is rebuilt (retrained) from SQLite."""
        assert self.index is not None
        if self.config.factory != "auto":
            return
        n = len(self.index)
        is_ivf = self.index.nprobe is not None
        if (not is_ivf and n > self.config.flat_threshold) or (
            is_ivf and n > 4 * max(1, self.built_size)
        ):
            log.info("%s: %d vectors, rebuilding as %s", self.table, n, self.config.factory_for(n))
            self._rebuild(conn)

    # ---- searching ----------------------------------------------------------------------

    def search(
        self,
        conn: sqlite3.Connection,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        threads: int | None = None,
    ) -> SearchResult | None:
        index = self.current(conn)
        if index is None:
            return None
        if query.shape[-1] != index.dim:
            raise InputShapeError(
                f"the query has {query.shape[-1]} values; stored vectors have {index.dim}"
            )
        # More neighbours than stored vectors cannot exist: asking FAISS for them would
        # only allocate (a huge k would exhaust memory).
        return index.search(query, min(k, max(1, len(index))), allowed_ids=allowed, threads=threads)


class AttributeFilter(FilterTranslator):
    """Feast metadata filters -> a SQL query returning the ids that pass them.

    Strings compare as text, numbers as numbers; ``ne`` and ``nin`` also keep rows that
    lack the attribute. ``and`` intersects, ``or`` unites.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self.attrs = f"{table}__attrs"

    def translate(self, filters: FilterType) -> tuple[str, list[Any]]:
        if filters is None:
            return f'SELECT id FROM "{self.table}"', []
        return self._dispatch(filters)

    def translate_comparison(self, f: ComparisonFilter) -> tuple[str, list[Any]]:
        if f.type in ("in", "nin"):
            values = list(f.value) if isinstance(f.value, list | tuple | set) else [f.value]
            parts = [self._equals(f.key, v) for v in values]
            union = " UNION ".join(p for p, _ in parts) or f'SELECT id FROM "{self.attrs}" WHERE 0'
            params = [x for _, ps in parts for x in ps]
            return (union, params) if f.type == "in" else self._negate(union, params)
        if f.type == "eq":
            return self._equals(f.key, f.value)
        if f.type == "ne":
            return self._negate(*self._equals(f.key, f.value))
        op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[f.type]
        column = "num" if _is_number(f.value) else "text"
        value = float(f.value) if column == "num" else str(f.value)
        return f'SELECT id FROM "{self.attrs}" WHERE name = ? AND {column} {op} ?', [f.key, value]

    def translate_compound(self, f: CompoundFilter) -> tuple[str, list[Any]]:
        parts = [self._dispatch(child) for child in f.filters]
        if not parts:
            return f'SELECT id FROM "{self.table}"', []
        glue = " INTERSECT " if f.type == "and" else " UNION "
        return glue.join(f"SELECT id FROM ({sql})" for sql, _ in parts), [
            x for _, ps in parts for x in ps
        ]

    def _equals(self, key: str, value: Any) -> tuple[str, list[Any]]:
        if _is_number(value):
            return f'SELECT id FROM "{self.attrs}" WHERE name = ? AND num = ?', [key, float(value)]
        return f'SELECT id FROM "{self.attrs}" WHERE name = ? AND text = ?', [key, str(value)]

    def _negate(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        return f'SELECT id FROM "{self.table}" EXCEPT SELECT id FROM ({sql})', params

    def allowed_ids(self, conn: sqlite3.Connection, filters: FilterType) -> np.ndarray | None:
        """The ids passing ``filters`` (None when there is no filter)."""
        if filters is None:
            return None
        if not online_tables.exists(conn, self.attrs):
            return np.zeros(0, dtype=np.int64)
        sql, params = self.translate(filters)
        return np.fromiter((row[0] for row in conn.execute(sql, params)), dtype=np.int64)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
