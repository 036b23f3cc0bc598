"""The embeddings view's rows of a few clips, valid at one time, read with DuckDB.

``more-like`` needs the training-set rows of the neighbours a search found: a few dozen
clips, all at one timestamp. Feast's ``get_historical_features`` answers that correctly
but pays for generality: it imports ibis and builds a point-in-time join over every row
of the view's table (a full read of all 512-float vectors: seconds at 100k clips, most of
a one-shot command's time). :func:`rows_at` asks DuckDB, which the offline store already
uses, for the same rows: only these clips' rows are decoded (the ``IN`` filter is pushed
into the Parquet scan) and only the view's columns.

DuckDB reads the file through :func:`~hear_features.featurestore.tables.snapshot`, a
name for the file opened once: a writer that replaces the table meanwhile cannot mix two
versions into one answer (DuckDB reopens its path per thread), and nothing in the
table's real path is interpreted (``KEY=VALUE`` folders as partition columns, ``*?[`` as
globs).

It applies the rule of Feast's point-in-time join for a view with a ``ttl`` of 0 (no
age limit): per clip, the newest row with ``event_timestamp <= at``, ties broken by the
newest ``created``. Views that Feast would read differently (a ``ttl``, a field mapping,
another source type or timestamp columns) are not read here: :func:`rows_at` returns None
and the caller goes through Feast. tests/test_offline_rows.py checks the answers against
``get_historical_features`` on the same store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore, FileSource

from hear_features.featurestore.repo import views
from hear_features.featurestore.tables import snapshot
from hear_features.schema import CREATED, EVENT_TIMESTAMP, JOIN_KEY


def rows_at(
    store: FeatureStore, clip_ids: Sequence[str], at: dt.datetime, features: Sequence[str]
) -> pa.Table | None:
    """``JOIN_KEY`` and ``features`` of the embeddings view for each of ``clip_ids`` as of
    ``at`` (timezone-aware), one row per clip that has one (clips without a row at ``at``
    are absent). None when the view is not one this module reads (see the module's
    docstring): the caller must then ask Feast."""
    view = store.registry.get_feature_view(views(store).embeddings, store.project, allow_cache=True)
    source = view.batch_source
    if (
        view.ttl
        or not isinstance(source, FileSource)
        or source.field_mapping
        or source.timestamp_field != EVENT_TIMESTAMP
        or source.created_timestamp_column != CREATED
    ):
        return None
    path = Path(source.path)
    if not path.is_absolute():
        path = Path(store.repo_path) / path
    if not clip_ids or not path.is_file():  # a folder of Parquet parts: Feast reads it
        return None
    with snapshot(path) as name:
        held = set(pq.read_schema(name).names)
        if not {JOIN_KEY, EVENT_TIMESTAMP, CREATED} <= held:
            return None
        columns = [f for f in features if f in held]
        return _newest_rows(name, list(dict.fromkeys(clip_ids)), at, columns)


def _newest_rows(name: str, clip_ids: list[str], at: dt.datetime, columns: list[str]) -> pa.Table:
    import duckdb  # imported here: only this reader needs it in a one-shot command

    selected = ", ".join(_quoted(c) for c in [JOIN_KEY, *columns])
    marks = ", ".join("?" for _ in clip_ids)
    query = f"""
        SELECT {selected} FROM (
            SELECT *, row_number() OVER (
                PARTITION BY {_quoted(JOIN_KEY)}
                ORDER BY {_quoted(EVENT_TIMESTAMP)} DESC, {_quoted(CREATED)} DESC NULLS LAST
            ) AS __newest
            FROM read_parquet(?, hive_partitioning = false)
            WHERE {_quoted(JOIN_KEY)} IN ({marks}) AND {_quoted(EVENT_TIMESTAMP)} <= ?
        ) WHERE __newest = 1
    """
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(query, params=[name, *clip_ids, at]).to_arrow_table()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
