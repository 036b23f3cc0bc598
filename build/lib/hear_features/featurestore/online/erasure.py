"""Deleting entities from :class:`HearOnlineStore` for good (``hear-features forget``).

Free functions over the store's configuration and a view, beside the store rather than
in it: Feast never deletes, so these are no part of its online-store interface.

* :func:`delete` removes the rows of some entity keys from several views in one
  transaction, with the forget's journal entry
  (:mod:`~hear_features.featurestore.online.journal`). From the commit on, no read or
  search of any process returns them: a search reads each hit's row after FAISS has
  answered and skips a deleted one, and every index drops the ids when it next catches
  up (the removal feed of :class:`~hear_features.featurestore.online.sqlite.ViewTable`,
  whose ``<table>__removed`` table lists the deleted ids under a ``seq`` of their own).
* :func:`compact` then saves each index of a view as its folder's only generation and
  drops the caches derived from its vectors, and :func:`vacuum` empties the database's
  write-ahead log (rewriting the file if it predates zeroing deletes), so that no file
  keeps the deleted bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feast.repo_config import RepoConfig

from hear_features.featurestore.config import repo_relative
from hear_features.featurestore.online import database, indexes
from hear_features.featurestore.online.attribute_filter import chunked
from hear_features.featurestore.online.journal import Journal
from hear_features.featurestore.online.rows import vector_field
from hear_features.featurestore.online.sqlite import ViewTable
from hear_features.featurestore.online.store import HearOnlineStore, index_root, view_table

#: A feature view, or an on-demand view that writes to the online store.
View = Any


def delete(
    config: RepoConfig,
    views: Sequence[View],
    keys: Sequence[bytes],
    journal_entry: tuple[str, str] | None = None,
) -> dict[str, int]:
    """Delete the rows of ``keys`` (serialized entity keys) from every view in
    ``views``, in one transaction with ``journal_entry`` (forget id, record) when given;
    returns the rows deleted per view name."""
    path = repo_relative(config, config.online_store.path)
    conn = database.connection(path)
    with database.transaction(conn):
        if journal_entry is not None:
            Journal(path).add(*journal_entry)
        return {view.name: _delete_rows(view_table(config, view), keys) for view in views}


def count(config: RepoConfig, view: View, keys: Sequence[bytes]) -> tuple[int, int]:
    """(rows, rows with a vector) of ``view`` among ``keys``: what :func:`delete` would
    remove."""
    table = view_table(config, view)
    if not keys or not table.exists():
        return 0, 0
    rows = vectors = 0
    for chunk in chunked(list(keys)):
        n, v = table.conn.execute(
            f'SELECT COUNT(*), COUNT(vector) FROM "{table.name}" '
            f"WHERE entity_key IN ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchone()
        rows, vectors = rows + int(n), vectors + int(v)
    return rows, vectors


def keys_with(
    config: RepoConfig, view: View, name: str, values: Sequence[str]
) -> list[tuple[bytes, str]]:
    """(entity key, value) of the rows whose scalar feature ``name`` is one of ``values``
    (as text), from the attribute table (views with a vector index, whose features are
    filterable)."""
    table = view_table(config, view)
    if not values or not table.exists(attributes=True):
        return []
    found: list[tuple[bytes, str]] = []
    for chunk in chunked(list(values)):
        found += table.conn.execute(
            f'SELECT t.entity_key, a.text FROM "{table.attrs}" a JOIN "{table.name}" t '
            f"ON t.id = a.id WHERE a.name = ? AND a.text IN ({','.join('?' * len(chunk))})",
            [name, *chunk],
        ).fetchall()
    return found


def _delete_rows(table: ViewTable, keys: Sequence[bytes]) -> int:
    """Delete the rows of ``keys`` with their attributes and record their ids as removed
    under a new ``seq``, in the caller's transaction (a forget deletes from every view at
    once or not at all); returns the rows deleted."""
    if not keys or not table.exists():
        return 0
    conn = table.conn
    ids: list[int] = []
    for chunk in chunked(list(keys)):
        marks = ",".join("?" * len(chunk))
        query = f'SELECT id FROM "{table.name}" WHERE entity_key IN ({marks})'
        ids += [int(r[0]) for r in conn.execute(query, chunk)]
    if not ids:
        return 0
    table.create_removed()
    seq = table.latest_seq() + 1
    with_attrs = table.exists(attributes=True)
    for chunk in chunked(ids):
        marks = ",".join("?" * len(chunk))
        conn.execute(f'DELETE FROM "{table.name}" WHERE id IN ({marks})', chunk)
        if with_attrs:
            conn.execute(f'DELETE FROM "{table.attrs}" WHERE id IN ({marks})', chunk)
    conn.executemany(
        f'INSERT OR REPLACE INTO "{table.removed}" (id, seq) VALUES (?, ?)',
        [(i, seq) for i in ids],
    )
    return len(ids)


def compact(config: RepoConfig, view: View) -> int:
    """After :func:`delete`: save every index of ``view`` as its folder's only generation
    (see :meth:`~hear_features.index.sync.IndexSync.compact`) and drop the caches derived
    from its vectors (the explorer's maps). Returns the number of indexes saved."""
    vector = vector_field(view)
    declared = vector.vector_search_metric if vector is not None else None
    syncs = indexes.saved_indexes(
        view_table(config, view), index_root(config), config.online_store.index, declared
    )
    for sync in syncs:
        sync.compact()
    derived = HearOnlineStore().derived_folder(config, view)
    for cached in derived.glob("map-*.npz") if derived.is_dir() else []:
        cached.unlink(missing_ok=True)
    return len(syncs)


def journal(config: RepoConfig) -> Journal:
    """The forget journal of the store's database."""
    return Journal(repo_relative(config, config.online_store.path))


def vacuum(config: RepoConfig) -> None:
    """Leave no free page or log frame of the store's database with deleted rows
    (:func:`~hear_features.featurestore.online.database.vacuum`)."""
    database.vacuum(repo_relative(config, config.online_store.path))
