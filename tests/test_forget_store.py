"""Deleting rows from HearOnlineStore: every process stops serving them, and no file of
the online database or the index folder keeps their bytes (flat, IVF and compressed
indexes). The end-to-end command is tested in tests/test_forget.py."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Array, Float32, String
from hear_features.index import Metric, read_manifest
from hear_features.index.arrays import prepare
from hear_features.index.sync import IndexSync

from hear_features.featurestore.online import database, erasure
from hear_features.featurestore.online.sqlite import ViewTable
from hear_features.featurestore.online_store import HearOnlineStore
from hear_features.featurestore.search import clip_key
from tests.support.vectors import clustered_vectors

DIM = 512
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CONFIGS = {
    "flat": ({}, 2_000),
    "ivf": ({"flat_threshold": 500}, 2_000),
    # Thresholds scaled down so that 6,000 vectors take the path of millions.
    "compressed": ({"flat_threshold": 1_000, "compress_above": 3_000}, 6_000),
}


def repo_config(tmp_path: Path, index: dict[str, int]) -> RepoConfig:
    return RepoConfig(
        project="forget",
        provider="local",
        registry=str(tmp_path / "registry.db"),
        online_store={
            "type": "hear_features.featurestore.online_store.HearOnlineStore",
            "path": str(tmp_path / "data" / "online.db"),
            "index_path": str(tmp_path / "data" / "index"),
            "index": index,
        },
        entity_key_serialization_version=3,
        repo_path=tmp_path,
    )


VIEW = FeatureView(
    name="docs",
    entities=[Entity(name="clip", join_keys=["clip_id"], value_type=ValueType.STRING)],
    schema=[
        Field(name="clip_id", dtype=String),
        Field(
            name="embedding",
            dtype=Array(Float32),
            vector_index=True,
            vector_length=DIM,
            vector_search_metric="COSINE",
        ),
        Field(name="subject_id", dtype=String),
    ],
    source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
)


def write(store: HearOnlineStore, config: RepoConfig, x: np.ndarray) -> list[str]:
    names = [f"clip-{i:05d}" for i in range(len(x))]
    rows = pa.table(
        {
            "clip_id": names,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM).cast(
                pa.list_(pa.float32())
            ),
            "subject_id": [f"subject-{i % 50}" for i in range(len(x))],
            "event_timestamp": pa.array([T0] * len(x), pa.timestamp("us", tz="UTC")),
            "created": pa.array([T0] * len(x), pa.timestamp("us", tz="UTC")),
        }
    )
    store.update(config, [], [VIEW], [], [], partial=False)
    store.write_arrow(config, VIEW, rows, "clip_id")
    store.checkpoint(config, VIEW)
    return names


def traces(vectors: np.ndarray) -> list[bytes]:
    """32-byte pieces of each vector, raw and normalised (what a cosine index stores)."""
    out = []
    for x in (vectors, prepare(vectors, Metric.COSINE)):
        out += [row[64:96].tobytes() for row in np.asarray(x, np.float32)]
    return out


def found_in(folder: Path, pieces: list[bytes]) -> list[str]:
    hits = []
    for path in (p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [f"{path.name}" for piece in pieces if piece in data]
    return hits


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_deleted_rows_leave_every_index_and_file(tmp_path: Path, kind: str) -> None:
    index, n = CONFIGS[kind]
    config = repo_config(tmp_path, index)
    store = HearOnlineStore()
    x = clustered_vectors(n, DIM, clusters=40, seed=3)
    names = write(store, config, x)
    data = tmp_path / "data"
    folder = data / "index" / "forget_docs"
    expected_kind = {"flat": "IndexFlat", "ivf": "IVF", "compressed": "RaBitQ"}[kind]
    assert expected_kind in read_manifest(folder).current.kind  # type: ignore[union-attr]
    gone = np.arange(0, n, 37)[:40]
    # Another process holding the index (an API worker): its own in-memory copy.
    table = ViewTable(data / "online.db", "forget_docs")
    cfg = config.online_store.index.with_metric(Metric.COSINE)
    reader = IndexSync(table, folder, cfg, "reader")
    before = reader.search(x[gone[:5]], 3, None)
    assert before is not None and (before.ids[:, 0] == gone[:5] + 1).all()  # row ids from 1
    assert found_in(data, traces(x[gone]))  # the scan finds them before

    counts = erasure.delete(config, [VIEW], [clip_key(names[i], 3) for i in gone])
    assert counts == {"docs": len(gone)}
    # Every process stops returning them: this one, and the reader once it catches up.
    hits = store.search(config, VIEW, x[gone], 5, features=["subject_id"])
    assert all(len(row) == 5 for row in hits)
    served = {h.key for row in hits for h in row}
    assert not served & {clip_key(names[i], 3) for i in gone}
    after = reader.search(x[gone], 5, None)
    assert after is not None and not np.isin(after.ids, gone + 1).any()
    assert len(reader.index) == n - len(gone)  # type: ignore[arg-type]

    erasure.compact(config, VIEW)
    manifest = read_manifest(folder)
    assert manifest is not None and manifest.previous is None
    assert manifest.current.count == n - len(gone)
    if kind == "compressed":
        assert manifest.current.raw_rows == n - len(gone)
        assert len(list(folder.glob("vectors-*.f32"))) == 1
    erasure.vacuum(config)
    assert found_in(data, traces(x[gone])) == []
    assert found_in(data, traces(x[1:3]))  # kept vectors are still there

    # A fresh process loads the compacted index: the same answers, no deleted id.
    fresh = IndexSync(table, folder, cfg, "fresh")
    again = fresh.search(x[gone], 5, None)
    assert again is not None and not np.isin(again.ids, gone + 1).any()
    # The old reader, whose vectors file was replaced, still saves correctly (a writer
    # that held the index across the deletion).
    reader.checkpoint()
    reloaded = IndexSync(table, folder, cfg, "reloaded")
    assert len(reloaded.current()) == n - len(gone)  # type: ignore[arg-type]
    assert found_in(data, traces(x[gone])) == []


def test_a_deletion_is_a_change_every_reader_sees(tmp_path: Path) -> None:
    """Deleting the rows of an old write batch still moves the view's generation (the
    explorer's caches key on it) and numbers later writes after it."""
    config = repo_config(tmp_path, {})
    store = HearOnlineStore()
    x = clustered_vectors(10, DIM, seed=1)
    names = write(store, config, x[:5])
    write(store, config, x[5:])  # ids clip-00000..4 again: a second batch
    table = ViewTable(tmp_path / "data" / "online.db", "forget_docs")
    first = store.generation(config, VIEW)
    erasure.delete(config, [VIEW], [clip_key(names[0], 3)])
    assert store.generation(config, VIEW) == first + 1
    assert list(table.removed_since(first)) == [1]
    ids, _, latest = table.changed_since(first)
    assert len(ids) == 0 and latest == first + 1
    written = table.write([], with_vectors=True)
    assert written.seq == first + 2
    # Deleting what is gone already changes nothing.
    assert erasure.delete(config, [VIEW], [clip_key(names[0], 3)]) == {"docs": 0}


def test_the_journal_entry_commits_with_the_deletion(tmp_path: Path) -> None:
    config = repo_config(tmp_path, {})
    store = HearOnlineStore()
    names = write(store, config, clustered_vectors(4, DIM, seed=2))
    journal = erasure.journal(config)
    assert journal.pending() == []

    class Boom(Exception):
        pass

    original = erasure._delete_rows

    def failing(table: ViewTable, keys: list[bytes]) -> int:
        original(table, keys)
        raise Boom

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(erasure, "_delete_rows", failing)
        with pytest.raises(Boom):
            erasure.delete(config, [VIEW], [clip_key(names[0], 3)], ("F-1", "{}"))
    assert journal.pending() == []  # rolled back with the deletion
    assert erasure.count(config, VIEW, [clip_key(names[0], 3)]) == (1, 1)

    erasure.delete(config, [VIEW], [clip_key(names[0], 3)], ("F-1", "{}"))
    assert journal.pending() == [("F-1", "{}")]
    assert erasure.count(config, VIEW, [clip_key(names[0], 3)]) == (0, 0)
    journal.finished("F-1")
    assert journal.pending() == []


def test_a_database_that_did_not_zero_its_deletes_is_rewritten_once(tmp_path: Path) -> None:
    """A database written before deletes were zeroed may hold stale copies of a vector in
    free pages: the first vacuum rewrites it (and marks it), so they go too; a marked
    one is trusted, which is why every connection zeroes what it frees."""
    config = repo_config(tmp_path, {})
    store = HearOnlineStore()
    x = clustered_vectors(6, DIM, seed=5)
    names = write(store, config, x)
    path = tmp_path / "data" / "online.db"
    assert database.connection(path).execute("PRAGMA user_version").fetchone()[0] == 1
    with sqlite3.connect(path) as old:  # what an older writer left: a freed, unzeroed copy
        old.execute("PRAGMA secure_delete = OFF")
        old.execute("CREATE TABLE scratch (b BLOB)")
        old.executemany(  # on many pages: a later write may reuse a few of them
            "INSERT INTO scratch VALUES (?)", [(x[0].tobytes(),)] * 50
        )
        old.execute("DROP TABLE scratch")
        old.execute("PRAGMA user_version = 0")
    erasure.delete(config, [VIEW], [clip_key(names[0], 3)])
    database.connection(path).execute("PRAGMA wal_checkpoint(TRUNCATE)")
    in_db = [f for f in found_in(tmp_path / "data", traces(x[:1])) if "online.db" in f]
    assert in_db  # the stale copy, in a free page
    erasure.vacuum(config)
    in_db = [f for f in found_in(tmp_path / "data", traces(x[:1])) if "online.db" in f]
    assert in_db == []
    assert database.connection(path).execute("PRAGMA user_version").fetchone()[0] == 1
