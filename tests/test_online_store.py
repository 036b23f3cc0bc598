"""HearOnlineStore keeps Feast's online-store contract, tested on the store itself.

The points Feast's own universal online-store tests check (values of every type come
back as written, an older event never overwrites a newer one, vector retrieval with
filters), plus the two gaps they revealed: the coroutine paths Feast's feature server
uses, and a vector field that declares no metric (Feast then asks for L2).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.filter_models import ComparisonFilter, CompoundFilter
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    UnixTimestamp,
)

from hear_features.featurestore.online.sqlite import RowToWrite, ViewTable
from hear_features.featurestore.online_store import HearOnlineStore
from tests.support.exact import exact_neighbours, normalise

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

#: (Feast type, a value, another value) for every type a feature may have.
TYPES: dict[str, tuple[Any, Any, Any]] = {
    "string": (String, "cough", ""),
    "int32": (Int32, -7, 2**31 - 1),
    "int64": (Int64, 2**40, -(2**62)),
    "float32": (Float32, 1.5, -0.25),
    "float64": (Float64, 3.141592653589793, -1e300),
    "bool": (Bool, True, False),
    "bytes": (Bytes, b"\x00\xffraw", b""),
    "timestamp": (UnixTimestamp, T0, T0 + dt.timedelta(days=400)),
    "strings": (Array(String), ["a", "b"], []),
    "int32s": (Array(Int32), [1, -2], [0]),
    "int64s": (Array(Int64), [2**40], [-1, 1]),
    "float32s": (Array(Float32), [0.5, -1.5], [2.0]),
    "float64s": (Array(Float64), [1e-300, 2.5], [0.0]),
    "bools": (Array(Bool), [True, False], [False]),
    "bytes_list": (Array(Bytes), [b"x", b""], [b"\x01"]),
    "timestamps": (Array(UnixTimestamp), [T0], [T0, T0 + dt.timedelta(seconds=1)]),
}


@pytest.fixture
def config(tmp_path: Path) -> RepoConfig:
    return RepoConfig(
        project="contract",
        provider="local",
        registry=str(tmp_path / "registry.db"),
        online_store={
            "type": "hear_features.featurestore.online_store.HearOnlineStore",
            "path": str(tmp_path / "online.db"),
            "index_path": str(tmp_path / "index"),
        },
        entity_key_serialization_version=3,
        repo_path=tmp_path,
    )


def view(name: str, fields: list[Field]) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.STRING)],
        schema=[Field(name="thing_id", dtype=String), *fields],
        source=FileSource(path="unused.parquet", timestamp_field="ts"),
    )


def key(thing: str) -> EntityKeyProto:
    return EntityKeyProto(join_keys=["thing_id"], entity_values=[ValueProto(string_val=thing)])


def value(feast_type: Any, python: Any) -> ValueProto:
    (proto,) = python_values_to_proto_values([python], feast_type.to_value_type())
    return proto


def vectors_view(metric: str | None) -> FeatureView:
    return view(
        f"vectors_{metric or 'undeclared'}".lower(),
        [
            Field(
                name="vec",
                dtype=Array(Float32),
                vector_index=True,
                vector_length=8,
                **({"vector_search_metric": metric} if metric else {}),
            ),
            Field(name="label", dtype=String),
            Field(name="n", dtype=Int64),
        ],
    )


def fill(store: HearOnlineStore, config: RepoConfig, fv: FeatureView, x: np.ndarray) -> None:
    rows = [
        (
            key(f"t{i:03d}"),
            {
                "vec": value(Array(Float32), x[i].tolist()),
                "label": value(String, "even" if i % 2 == 0 else "odd"),
                "n": value(Int64, i),
            },
            T0,
            None,
        )
        for i in range(len(x))
    ]
    store.update(config, [], [fv], [], [], partial=False)
    store.online_write_batch(config, fv, rows, None)


def search(
    store: HearOnlineStore,
    config: RepoConfig,
    fv: FeatureView,
    q: np.ndarray,
    k: int,
    metric: str | None = None,
    filters: Any = None,
) -> dict[str, float]:
    docs = store.retrieve_online_documents_v2(
        config, fv, ["label", "n"], q.tolist(), k, distance_metric=metric, filters=filters
    )
    return {k.entity_values[0].string_val: f["distance"].float_val for _, k, f in docs}


def test_every_feast_value_type_comes_back_as_written(config: RepoConfig) -> None:
    store = HearOnlineStore()
    fv = view("types", [Field(name=name, dtype=t) for name, (t, _, _) in TYPES.items()])
    store.update(config, [], [fv], [], [], partial=False)
    rows = [
        (key(thing), {n: value(t, v[i]) for n, (t, *v) in TYPES.items()}, T0, None)
        for i, thing in enumerate(["first", "second"])
    ]
    rows.append((key("empty"), {name: ValueProto() for name in TYPES}, T0, None))
    store.online_write_batch(config, fv, rows, None)
    read = store.online_read(config, fv, [key("first"), key("second"), key("empty"), key("nope")])
    for (_, written, _, _), (event_ts, features) in zip(rows, read, strict=False):
        assert event_ts == T0
        assert features == written
    assert read[3] == (None, None)
    some = store.online_read(config, fv, [key("first")], ["int64", "strings"])
    assert set(some[0][1] or {}) == {"int64", "strings"}


def test_an_older_event_never_overwrites_a_newer_one(config: RepoConfig) -> None:
    store = HearOnlineStore()
    fv = vectors_view("COSINE")
    store.update(config, [], [fv], [], [], partial=False)
    new, old = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]

    def write(vec: np.ndarray, label: str, at: dt.datetime) -> None:
        features = {"vec": value(Array(Float32), vec.tolist()), "label": value(String, label)}
        store.online_write_batch(config, fv, [(key("k"), features, at, None)], None)

    write(new, "newer", T0 + dt.timedelta(hours=1))
    write(old, "older", T0)  # arrives later, but happened earlier
    ((event_ts, features),) = store.online_read(config, fv, [key("k")])
    assert event_ts == T0 + dt.timedelta(hours=1)
    assert features is not None and features["label"].string_val == "newer"
    # The index agrees with the table: the stored vector is the newer one.
    assert search(store, config, fv, new, 1) == pytest.approx({"k": 0.0}, abs=1e-6)
    write(old, "newest", T0 + dt.timedelta(hours=2))
    assert search(store, config, fv, old, 1) == pytest.approx({"k": 0.0}, abs=1e-6)


def test_v2_retrieval_with_filters_is_exact_among_the_allowed(config: RepoConfig) -> None:
    store = HearOnlineStore()
    fv = vectors_view("COSINE")
    x = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    fill(store, config, fv, x)
    q = x[7] + 0.1
    ids = np.arange(60)
    cases = [
        (None, ids),
        (ComparisonFilter(type="eq", key="label", value="odd"), ids[ids % 2 == 1]),
        (ComparisonFilter(type="lt", key="n", value=10), ids[ids < 10]),
        (
            CompoundFilter(
                type="or",
                filters=[
                    ComparisonFilter(type="in", key="n", value=[3, 4, 5]),
                    ComparisonFilter(type="gte", key="n", value=55),
                ],
            ),
            np.array([3, 4, 5, 55, 56, 57, 58, 59]),
        ),
    ]
    for filters, allowed in cases:
        found = search(store, config, fv, q, 5, filters=filters)
        (expected,) = exact_neighbours(normalise(q[None]), normalise(x[allowed]), allowed, 5)
        assert set(found) == {f"t{i:03d}" for i in expected}, filters
        sims = normalise(x[expected]) @ normalise(q[None])[0]
        assert sorted(found.values()) == pytest.approx(sorted(1 - sims), abs=1e-5)


@pytest.mark.parametrize(
    ("declared", "requested", "used"),
    [
        (None, "L2", "l2"),  # Feast's default request, for a field that declares nothing
        (None, "COSINE", "cosine"),
        (None, None, "cosine"),
        ("COSINE", "L2", "cosine"),  # the field's declared metric wins
        ("L2", "COSINE", "l2"),
    ],
)
def test_the_declared_metric_wins_else_the_requested_one(
    config: RepoConfig, declared: str | None, requested: str | None, used: str
) -> None:
    store = HearOnlineStore()
    fv = vectors_view(declared)
    x = np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32) * 3
    fill(store, config, fv, x)
    q = x[0] + 0.5
    found = search(store, config, fv, q, 5, metric=requested)
    if used == "l2":
        truth = np.linalg.norm(x - q, axis=1)
    else:
        truth = 1 - normalise(x) @ normalise(q[None])[0]
    best = np.argsort(truth)[:5]
    assert found == pytest.approx({f"t{i:03d}": float(truth[i]) for i in best}, abs=1e-4)


def test_reads_and_writes_as_coroutines(config: RepoConfig) -> None:
    store = HearOnlineStore()
    assert store.async_supported.read and store.async_supported.write
    fv = vectors_view("COSINE")
    store.update(config, [], [fv], [], [], partial=False)
    x = np.random.default_rng(2).standard_normal((20, 8)).astype(np.float32)
    progress: list[int] = []

    async def main() -> list[tuple[dt.datetime | None, dict[str, ValueProto] | None]]:
        await asyncio.gather(
            *(
                store.online_write_batch_async(
                    config,
                    fv,
                    [
                        (
                            key(f"t{i:03d}"),
                            {"vec": value(Array(Float32), x[i].tolist())},
                            T0,
                            None,
                        )
                    ],
                    progress.append,
                )
                for i in range(20)
            )
        )
        return await store.online_read_async(config, fv, [key("t005"), key("none")], ["vec"])

    (found, missing) = asyncio.run(main())
    assert progress == [1] * 20 and missing == (None, None)
    assert found[1] is not None
    np.testing.assert_allclose(found[1]["vec"].float_list_val.val, x[5], atol=1e-6)
    assert search(store, config, fv, x[5], 1) == pytest.approx({"t005": 0.0}, abs=1e-6)


def test_changed_since_reads_only_the_changed_rows_through_the_seq_index(
    tmp_path: Path,
) -> None:
    """An index catching up asks for the rows written after its watermark: the answer is
    those rows in id order, and SQLite finds them through the ``seq`` index rather than
    by walking the whole table (a catch-up that found nothing cost 0.11 s at 100k)."""
    table = ViewTable(tmp_path / "online.db", "docs")
    x = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)

    def rows(names: list[int]) -> list[RowToWrite]:
        return [RowToWrite(f"k{i}".encode(), b"", x[i], T0, None, []) for i in names]

    first = table.write(rows(list(range(20))), with_vectors=True).seq
    table.write(rows([25, 3, 21]), with_vectors=True)  # 3 again: it moves to the new seq
    statements: list[str] = []
    table.conn.set_trace_callback(statements.append)
    ids, vectors, latest = table.changed_since(first)
    table.conn.set_trace_callback(None)
    assert latest == first + 1
    assert list(ids) == sorted(ids) and len(ids) == 3
    assert {v.tobytes() for v in vectors} == {x[i].tobytes() for i in (25, 3, 21)}
    assert np.array_equal(vectors[0], x[3])  # k3 keeps its row id, the lowest: first
    select = next(s for s in statements if s.lstrip().upper().startswith("SELECT ID, VECTOR"))
    plan = " ".join(str(r) for r in table.conn.execute(f"EXPLAIN QUERY PLAN {select}"))
    assert "USING INDEX" in plan and "__seq" in plan, plan
