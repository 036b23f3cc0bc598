"""A vector feature view bound to the online store: what every search of it needs, found once.

Feast hands the online store a freshly built ``FeatureView`` on every call; finding its
vector field, SQLite table and FAISS index again each time costs more than the search.
:class:`BoundView` holds them for one view definition. The search service
(:class:`~hear_features.featurestore.search.ClipSearch`) keeps one until the registry
changes; Feast's own retrieval binds the view it is handed, once per call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from feast.field import Field
from feast.filter_models import ComparisonFilter, CompoundFilter

from hear_features.errors import InputShapeError
from hear_features.featurestore.online.fields import Kind, check_filters
from hear_features.featurestore.online.sqlite import StoredRow, ViewTable
from hear_features.index.arrays import check_vectors
from hear_features.index.sync import IndexSync


@dataclass(frozen=True)
class Hit:
    """One search result: the serialized entity key, how close it is, its features."""

    key: bytes
    distance: float
    score: float
    features: dict[str, Any]  # Feast values; plain Python with search(plain=True)
    event_ts: dt.datetime


@dataclass(frozen=True)
class BoundView:
    """One vector view of one repository: its indexed field, its table, the index it is
    searched with (the declared metric's, else the requested one's)."""

    name: str
    vector: Field
    table: ViewTable
    sync: IndexSync
    fields: dict[str, Kind]  # the features filters may name (fields.filter_fields)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filters: ComparisonFilter | CompoundFilter | None = None,
        features: Sequence[str] | None = None,
        threads: int | None = None,
        plain: bool = False,
    ) -> list[list[Hit]]:
        """The ``k`` nearest stored entities of each query ([n, d] or [d]), nearest
        first, with ``features`` (None: all of them, the vector included; the vector is
        decoded only when asked for, because that costs more than the search itself).
        ``threads`` as in :meth:`hear_features.index.VectorIndex.search`; ``plain``
        returns features as plain Python values rather than Feast ``Value`` messages.

        Checked first: ``filters`` name features of the view with values of their types
        (:func:`~.fields.check_filters`, :class:`~hear_features.errors.FilterError`), and
        the queries can be compared faithfully (:func:`~hear_features.index.arrays.
        check_vectors`: no NaN, no overflow, no zero vector for cosine)."""
        if k < 1:
            raise InputShapeError(f"k must be at least 1, got {k}")
        filters = check_filters(filters, self.fields, self.name)
        q = check_vectors(np.asarray(queries), self.sync.config.metric)
        result = self.sync.search(q, k, self.table.allowed_ids(filters), threads)
        if result is None:
            return [[] for _ in q]
        ids = np.unique(result.ids[result.ids >= 0]).tolist()
        found = {
            r.id: r for r in self.table.read("id", ids, self.vector.name, features, plain=plain)
        }
        answers: list[list[Hit]] = []
        for row_index in range(len(q)):
            hits = []
            for row_id, distance, score in result.hits(row_index):
                row = found.get(row_id)
                if row is not None:  # None: deleted since the index was read
                    hits.append(Hit(row.key, distance, score, row.features, row.event_ts))
            answers.append(hits)
        return answers

    def read(
        self, keys: Sequence[bytes], features: Sequence[str] | None = None, *, plain: bool = False
    ) -> dict[bytes, StoredRow]:
        """Stored rows by serialized entity key, with ``features`` (all when None)."""
        found = self.table.read("entity_key", keys, self.vector.name, features, plain=plain)
        return {row.key: row for row in found}
