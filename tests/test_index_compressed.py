"""The compressed index for large collections, on small data: the automatic choice, exact
re-ranking from the vectors file, the streamed build, writes and persistence."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hear_features.index import IndexConfig, IndexLoadError, Metric, load, save
from hear_features.index.config import POINTS_PER_CENTROID, auto_factory, is_lossy
from hear_features.index.sync import FrozenVectors, IndexSync

from hear_features.errors import ConfigError, InputShapeError
from hear_features.featurestore.online.sqlite import RowToWrite, ViewTable
from tests.support.index import VectorIndex
from tests.support.vectors import clustered_vectors

N, DIM = 6_000, 512
# Thresholds scaled down so that 6,000 vectors take the path 5M vectors take by default.
CONFIG = IndexConfig(flat_threshold=1_000, compress_above=3_000)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = clustered_vectors(N + 100, DIM, clusters=40, seed=7)
    return np.arange(N, dtype=np.int64) * 3 + 1, x[:N], x[N:]


@pytest.fixture(scope="module")
def built(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> VectorIndex:
    ids, base, _ = data
    return VectorIndex.build(ids, base, CONFIG)


def exact(base: np.ndarray, queries: np.ndarray, k: int, metric: Metric) -> np.ndarray:
    """Exact top-k row numbers by brute force in numpy."""
    if metric is Metric.L2:
        keys = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(axis=2)
    else:
        if metric is Metric.COSINE:
            base = base / np.linalg.norm(base, axis=1, keepdims=True)
            queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        keys = -(queries @ base.T)
    return np.argsort(keys, axis=1)[:, :k]


def recall(found: np.ndarray, truth_ids: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth_ids, strict=True)])
    )


@pytest.mark.parametrize("n", [0, 1, 100, 1_000, 1_001, 20_001, 50_000, 1_000_001, 5_000_000])
@pytest.mark.parametrize("train_sample", [1_000, 160_000])
def test_auto_never_picks_an_index_its_sample_cannot_train(n: int, train_sample: int) -> None:
    config = IndexConfig(flat_threshold=1_000, compress_above=20_000, train_sample=train_sample)
    factory = config.factory_for(n)
    lists = re.match(r"IVF(\d+),", factory)
    if lists is None:
        assert factory == "Flat"
    else:
        assert 16 <= int(lists.group(1)) <= min(n, train_sample) // POINTS_PER_CENTROID
        assert factory.endswith(",RaBitQ") == (n > 20_000)
    # The defaults: flat, then IVF-Flat up to 1M, then compressed; 5M gets 4,102 lists.
    assert IndexConfig().factory_for(20_001) == "IVF512,Flat"  # 4*sqrt(N) would be 560
    assert IndexConfig().factory_for(1_000_000) == "IVF4000,Flat"
    assert IndexConfig().factory_for(5_000_000) == "IVF4102,RaBitQ"
    assert auto_factory(500, train_points=500, flat_threshold=0, compress_above=0) == "Flat"


def test_lossy_factories_are_recognised() -> None:
    for factory in ("Flat", "IVF64,Flat", "HNSW32", "HNSW32,Flat", "IVF64_HNSW32,Flat"):
        assert not is_lossy(factory), factory
    for factory in (
        "IVF64,RaBitQ",
        "IVF64,PQ16x4fs",
        "IVF64,SQ8",
        "HNSW32,PQ16",
        "OPQ16,IVF64,PQ16",
    ):
        assert is_lossy(factory), factory
    with pytest.raises(ConfigError, match="compress_above must be >= flat_threshold"):
        IndexConfig(flat_threshold=10, compress_above=5)
    with pytest.raises(ConfigError, match="rerank must be >= 0"):
        IndexConfig(rerank=-1)


def test_compressed_index_reranks_with_exact_scores(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], built: VectorIndex
) -> None:
    ids, base, queries = data
    assert "RaBitQ" in built.kind and built.raw_vectors is not None
    assert len(built.raw_vectors) == N and len(built) == N
    result = built.search(queries, 10)
    truth = ids[exact(base, queries, 10, Metric.COSINE)]
    assert recall(result.ids, truth) >= 0.9
    # Every returned score is the exact cosine of the stored vector, best first.
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    rows = (result.ids - 1) // 3
    np.testing.assert_allclose(result.scores, np.einsum("qkd,qd->qk", unit[rows], q), atol=1e-5)
    assert (np.diff(result.scores, axis=1) <= 1e-6).all()
    # Without re-ranking, the same index answers from its 1-bit codes alone: worse.
    plain = VectorIndex(built.index, IndexConfig(rerank=0))
    assert recall(plain.search(queries, 10).ids, truth) < recall(result.ids, truth)
    np.testing.assert_allclose(built.reconstruct(int(ids[5])), unit[5], atol=1e-6)


@pytest.mark.parametrize("metric", [Metric.L2, Metric.IP])
def test_reranking_follows_the_metric(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], metric: Metric
) -> None:
    ids, base, queries = data
    base, queries = base[:3_500], queries[:20]
    config = IndexConfig(metric=metric, flat_threshold=1_000, compress_above=3_000)
    index = VectorIndex.build(ids[:3_500], base, config)
    assert index.raw_vectors is not None
    result = index.search(queries, 5)
    assert recall(result.ids, ids[exact(base, queries, 5, metric)]) >= 0.9
    rows = (result.ids - 1) // 3
    if metric is Metric.L2:
        want = np.sqrt(((base[rows] - queries[:, None, :]) ** 2).sum(axis=2))
    else:
        want = -np.einsum("qkd,qd->qk", base[rows], queries)
    np.testing.assert_allclose(result.distances, want, rtol=1e-4, atol=1e-4)


def test_filters_and_writes_on_a_compressed_index(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    ids, base, queries = data
    index = VectorIndex.build(ids, base, CONFIG)
    allowed = ids[::7]
    hits = index.search(queries[:10], 10, allowed_ids=allowed).ids
    assert np.isin(hits[hits >= 0], allowed).all() and (hits >= 0).all()
    # Upsert: the id now holds the opposite vector; remove: it is gone everywhere.
    index.upsert(ids[:3], -base[:3])
    assert index.search(-base[:1], 1).ids[0, 0] == ids[0]
    np.testing.assert_allclose(
        index.reconstruct(int(ids[0])), -base[0] / np.linalg.norm(base[0]), atol=1e-6
    )
    assert index.remove(np.array([ids[1], 999_999_999])) == 1
    assert len(index) == N - 1 and ids[1] not in index.search(base[1:2], 20).ids
    with pytest.raises(KeyError):
        index.reconstruct(int(ids[1]))


def test_save_load_keeps_the_vectors_file_append_only(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ids, base, queries = data
    index = VectorIndex.build(ids[:4_000], base[:4_000], CONFIG)
    first = save(index, tmp_path, model_id="m", source_watermark=1).current
    assert first.raw_rows == 4_000 and first.raw_file and first.mapping_file
    vectors = tmp_path / first.raw_file
    assert vectors.stat().st_size == 4_000 * DIM * 4
    # Sizes: the index file is a small fraction of the raw vectors.
    assert (tmp_path / first.file).stat().st_size < 0.3 * vectors.stat().st_size
    loaded, _, _ = load(tmp_path, CONFIG, model_id="m")
    np.testing.assert_array_equal(loaded.search(queries, 10).ids, index.search(queries, 10).ids)
    # A crashed writer left half a row; the next save appends after it, never over it.
    with vectors.open("ab") as f:
        f.write(b"\x01" * 100)
    before = vectors.read_bytes()[: 4_000 * DIM * 4]
    loaded.upsert(ids[4_000:4_100], base[4_000:4_100])
    second = save(loaded, tmp_path, model_id="m", source_watermark=2).current
    assert second.raw_file == first.raw_file and second.raw_rows == 4_101
    assert vectors.read_bytes()[: 4_000 * DIM * 4] == before
    reloaded, generation, manifest = load(tmp_path, CONFIG, model_id="m")
    assert len(reloaded) == 4_100 and generation.raw_rows == 4_101
    again = VectorIndex(reloaded.index, CONFIG, raw_vectors=reloaded.raw_vectors)
    np.testing.assert_allclose(
        again.reconstruct(int(ids[4_050])),
        base[4_050] / np.linalg.norm(base[4_050]),
        atol=1e-6,
    )
    # The previous generation still reads its own rows.
    assert manifest.previous is not None and manifest.previous.raw_rows == 4_000
    # A vectors file shorter than the manifest says is refused, not read as garbage.
    vectors.write_bytes(before[: DIM * 4 * 10])
    with pytest.raises(IndexLoadError, match="shorter than the"):
        load(tmp_path, CONFIG, model_id="m")


def test_streamed_build_reads_twice_and_matches_the_in_memory_build(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], built: VectorIndex, tmp_path: Path
) -> None:
    ids, base, queries = data
    passes = []

    def chunks():  # type: ignore[no-untyped-def]
        passes.append(1)
        for start in range(0, N, 1_500):
            yield ids[start : start + 1_500], base[start : start + 1_500]

    index = VectorIndex.build_streamed(chunks, N, DIM, CONFIG, tmp_path)
    assert len(passes) == 2 and len(index) == N and "RaBitQ" in index.kind
    assert index.raw_vectors is not None and index.raw_vectors.path is not None
    assert index.raw_vectors.path.parent == tmp_path and not index.raw_vectors.pending
    truth = ids[exact(base, queries, 10, Metric.COSINE)]
    assert recall(index.search(queries, 10).ids, truth) >= 0.9
    assert (
        abs(
            recall(index.search(queries, 10).ids, truth)
            - recall(built.search(queries, 10).ids, truth)
        )
        <= 0.05
    )
    saved = save(index, tmp_path, model_id="m", source_watermark=1).current
    assert saved.raw_file == index.raw_vectors.path.name  # saved in place, not copied

    calls = []

    def shorter():  # type: ignore[no-untyped-def]
        calls.append(1)
        yield ids[:100], base[:100]
        if len(calls) == 1:  # the second pass loses a chunk
            yield ids[100:200], base[100:200]

    with pytest.raises(InputShapeError, match="gave 100 vectors the second time, not 200"):
        VectorIndex.build_streamed(shorter, 200, DIM, IndexConfig(), tmp_path / "x")


DEFINITIONS = """
from datetime import timedelta
from pathlib import Path
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, String

doc = Entity(name="doc", join_keys=["doc_id"], value_type=ValueType.STRING)
docs = FeatureView(
    name="docs",
    entities=[doc],
    ttl=timedelta(0),
    schema=[
        Field(name="embedding", dtype=Array(Float32), vector_index=True, vector_search_metric="COSINE"),
        Field(name="doc_name", dtype=String),
    ],
    source=FileSource(path=str(Path(__file__).resolve().parent / "docs.parquet"),
                      file_format=ParquetFormat(), timestamp_field="event_timestamp"),
    online=True,
)
"""

STORE_YAML = """project: compressed
provider: local
registry: data/registry.db
offline_store:
  type: duckdb
online_store:
  type: hear_features.featurestore.online_store.HearOnlineStore
  path: data/online.db
  index:
    flat_threshold: 1000
    compress_above: 3000
entity_key_serialization_version: 3
"""


@pytest.mark.slow
def test_the_online_store_serves_a_compressed_index_through_feast(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """HearOnlineStore with small thresholds builds the compressed index; Feast's own search
    reaches it, and a fresh process loads it (codes, mapping, vectors file) from disk."""
    import datetime as dt

    import pyarrow as pa

    from hear_features.featurestore.repo import open_store
    from tests.conftest import feast

    _, base, queries = data
    (tmp_path / "definitions.py").write_text(DEFINITIONS)
    (tmp_path / "feature_store.yaml").write_text(STORE_YAML)
    feast(tmp_path, "apply")
    store = open_store(tmp_path)
    view = store.get_feature_view("docs")
    online = store._get_provider().online_store
    names = [f"doc-{i}" for i in range(N)]
    rows = pa.table(
        {
            "doc_id": names,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), DIM).cast(
                pa.list_(pa.float32())
            ),
            "doc_name": names,
            "event_timestamp": pa.array(
                [dt.datetime.now(dt.UTC)] * N, pa.timestamp("us", tz="UTC")
            ),
            "created": pa.array([dt.datetime.now(dt.UTC)] * N, pa.timestamp("us", tz="UTC")),
        }
    )
    online.write_arrow(store.config, view, rows, "doc_id")
    online.checkpoint(store.config, view)
    manifests = list((tmp_path / "data" / "index").rglob("manifest.json"))
    assert len(manifests) == 1
    current = json.loads(manifests[0].read_text())["current"]
    assert "RaBitQ" in current["kind"] and current["raw_rows"] == N

    truth = exact(base, queries[:5], 10, Metric.COSINE)
    found = []
    for q, want in zip(queries[:5], truth, strict=True):
        out = store.retrieve_online_documents_v2(
            features=["docs:doc_name"], query=q.tolist(), top_k=10
        ).to_dict()
        found.append(sorted(out["doc_name"]))
        assert len({int(name[4:]) for name in out["doc_name"]} & set(want.tolist())) >= 8
    # A fresh process loads the saved index (codes, id mapping, vectors file): same answers.
    np.save(tmp_path / "queries.npy", queries[:5])
    script = (
        "import json, sys, numpy as np\n"
        "from hear_features.featurestore.repo import open_store\n"
        "store = open_store(sys.argv[1])\n"
        "qs = np.load(sys.argv[1] + '/queries.npy')\n"
        "print(json.dumps([sorted(store.retrieve_online_documents_v2(features=['docs:doc_name'],"
        " query=q.tolist(), top_k=10).to_dict()['doc_name']) for q in qs]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == found


class ReadCountingTable(ViewTable):
    """The online store's real SQLite table, noting the rows of every read a rebuild
    makes; ``between`` runs after the first full pass (a writer at the worst moment)."""

    def __init__(self, database: Path, name: str) -> None:
        super().__init__(database, name)
        self.reads: list[int] = []
        self.passes = 0
        self.between: Callable[[], None] | None = None

    @contextlib.contextmanager
    def frozen(self, chunk_rows: int) -> Iterator[FrozenVectors]:
        with super().frozen(chunk_rows) as table:

            def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                self.passes += 1
                for ids, vectors in table.chunks():
                    self.reads.append(len(ids))
                    yield ids, vectors
                if self.passes == 1 and self.between is not None:
                    self.between()

            yield dataclasses.replace(table, chunks=chunks)


def write_vectors(table: ViewTable, keys: range, vectors: np.ndarray) -> None:
    now = dt.datetime.now(dt.UTC)
    table.write(
        [
            RowToWrite(f"doc-{k}".encode(), b"{}", v, now, None, [])
            for k, v in zip(keys, vectors, strict=True)
        ],
        with_vectors=True,
    )


def test_a_rebuild_above_compress_above_streams_the_table_in_chunks(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    _, base, queries = data
    table = ReadCountingTable(tmp_path / "online.db", "docs")
    write_vectors(table, range(N), base)
    late = clustered_vectors(50, DIM, clusters=5, seed=99)
    # Written while the rebuild is between its two passes, on another connection: the
    # build still sees one consistent table, and the new rows arrive by catching up.
    table.between = lambda: write_vectors(table, range(N, N + 50), late)

    sync = IndexSync(table, tmp_path / "index", CONFIG, "docs", chunk_rows=500)
    index = sync.current()
    assert index is not None and "RaBitQ" in index.kind  # N is above compress_above
    assert table.passes == 2 and max(table.reads) == 500  # never more than a chunk at once
    assert sum(table.reads) == 2 * N  # the snapshot: the late rows were not in it
    assert len(index) == N and sync.built_size == N
    index = sync.current()  # the next use catches up with the rows written meanwhile
    assert index is not None and len(index) == N + 50
    ids = np.arange(1, N + 1, dtype=np.int64)  # SQLite ids, in write order
    truth = ids[exact(base, queries, 10, Metric.COSINE)]
    assert recall(index.search(queries, 10).ids, truth) >= 0.9
    assert set(index.search(late[:5], 1).ids[:, 0]) == set(range(N + 1, N + 6))

    # Below the threshold the same reads are gathered into an in-memory build.
    small = ReadCountingTable(tmp_path / "online.db", "docs")
    below = IndexConfig(flat_threshold=1_000, compress_above=10_000)
    rebuilt = IndexSync(small, tmp_path / "index2", below, "docs", chunk_rows=500).current()
    assert rebuilt is not None and "IndexIVFFlat" in rebuilt.kind and len(rebuilt) == N + 50
    assert small.passes == 1 and max(small.reads) == 500
