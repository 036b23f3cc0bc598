"""The one-timestamp read of training rows (``more-like``'s neighbours) against Feast's
point-in-time join: the same rows, values and types on rows written to make the edge
cases (ties broken by ``created``, rows after the timestamp, a row exactly at it).
tests/test_featurestore.py compares the two on the workflow's history as well."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hear_features.featurestore import tables as offline_tables
from hear_features.featurestore.offline_rows import rows_at
from hear_features.featurestore.repo import open_store, tables
from hear_features.schema import EMBEDDING_SCHEMA
from tests.support.shipped_repo import make_repo
from tests.support.training_frames import assert_same, both_ways


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped repo, applied, with offline rows written to hit each edge case."""
    repo = make_repo(tmp_path_factory.mktemp("offline-rows") / "repo", "standin")
    at = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)

    def row(clip: str, label: str, when: dt.datetime, created: dt.datetime) -> dict:
        vector = np.full(512, float(len(label)), np.float32)
        return {
            "clip_id": clip,
            "recording_id": clip[:3],
            "subject_id": "s1",
            "label": label,
            "dataset": "d",
            "device": "phone",
            "audio_uri": f"/a/{clip}.wav",
            "offset_s": 0.0,
            "embedding": vector.tolist(),
            "model_id": "m",
            "event_timestamp": when,
            "created": created,
        }

    rows = [
        # A tie on event_timestamp: the newer "created" wins.
        row("tie", "first", at - hour, at - hour),
        row("tie", "second-newer", at - hour, at),
        # Only a row after the timestamp: absent, i.e. nulls.
        row("later", "later", at + hour, at + hour),
        # An older row and a newer one past the timestamp: the older one.
        row("old-new", "old", at - 2 * hour, at - 2 * hour),
        row("old-new", "new", at + 2 * hour, at + 2 * hour),
        # Exactly at the timestamp: included.
        row("exact", "exact", at, at),
    ]
    table = pa.Table.from_pylist(rows).select(EMBEDDING_SCHEMA.names).cast(EMBEDDING_SCHEMA)
    store = open_store(repo)
    pq.write_table(table, tables(store).embeddings)
    return repo


def test_rows_at_edge_cases_match_feast(crafted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(crafted)
    at = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    ids = ["tie", "later", "old-new", "exact", "tie"]  # a clip twice: two rows out
    entities = pd.DataFrame({"clip_id": ids, "event_timestamp": [at] * len(ids)})
    fast, slow = both_ways(store, entities, monkeypatch)
    assert_same(fast, slow)
    labels = dict(zip(fast["clip_id"], fast["label"], strict=False))
    assert labels["tie"] == "second-newer"
    assert pd.isna(labels["later"])
    assert labels["old-new"] == "old"
    assert labels["exact"] == "exact"
    assert len(fast) == len(ids)


def test_a_view_with_a_ttl_is_left_to_feast(crafted: Path) -> None:
    """A ttl bounds the rows' age; :func:`rows_at` does not apply it, so it declines."""
    store = open_store(crafted)
    at = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    assert rows_at(store, ["tie"], at, ["label"]) is not None
    view = store.get_feature_view("cough_embeddings")
    original = view.ttl
    view.ttl = dt.timedelta(days=30)
    store.apply([view])
    try:
        assert rows_at(open_store(crafted), ["tie"], at, ["label"]) is None
    finally:
        view.ttl = original
        store.apply([view])


def test_rows_split_over_row_groups_give_the_same_answer(
    crafted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offline tables are written in row groups (``tables.ROW_GROUP_ROWS``) so that
    readers skip what they do not need; a clip whose rows lie in different groups (the
    tie, the old and the new row) reads the same as from one group."""
    store = open_store(crafted)
    path = tables(store).embeddings
    original = pq.read_table(path)
    monkeypatch.setattr(offline_tables, "ROW_GROUP_ROWS", 2)
    try:
        offline_tables.write_table(path, original)
        assert pq.ParquetFile(path).metadata.num_row_groups == 3
        at = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
        ids = ["tie", "later", "old-new", "exact"]
        entities = pd.DataFrame({"clip_id": ids, "event_timestamp": [at] * len(ids)})
        fast, slow = both_ways(open_store(crafted), entities, monkeypatch)
        assert_same(fast, slow)
        assert list(fast["label"].fillna("-")) == ["second-newer", "-", "old", "exact"]
    finally:
        pq.write_table(original, path)
