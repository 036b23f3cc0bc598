"""The FAISS index: recall, writes, filters, persistence and device selection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from hear_features.index import IndexConfig, IndexLoadError, Metric, load, save
from hear_features.index.arrays import prepare as _prepare
from hear_features.index.gpu import choose_device

from hear_features.errors import ConfigError, DeviceError, InputShapeError
from tests.support.exact import cosine_top_k, exact_neighbours
from tests.support.index import VectorIndex
from tests.support.vectors import clustered_vectors


def small(n: int = 2_000, dim: int = 32, seed: int = 0) -> np.ndarray:
    return clustered_vectors(n, dim, clusters=20, seed=seed)


@pytest.fixture(scope="module")
def big() -> tuple[np.ndarray, np.ndarray, VectorIndex]:
    x = clustered_vectors(50_200, 512, seed=1)
    ids = np.arange(50_000, dtype=np.int64) * 3 + 7
    return x, ids, VectorIndex.build(ids, x[:50_000], IndexConfig())


def test_default_index_reaches_recall_target_on_50k(
    big: tuple[np.ndarray, np.ndarray, VectorIndex],
) -> None:
    x, ids, index = big
    assert index.kind.startswith("IVF") and index.nprobe is not None  # above the flat threshold
    queries = x[50_000:]  # 200 held-out vectors from the same distribution
    exact_idx, _ = cosine_top_k(queries, x[:50_000], 10)
    got = index.search(queries, 10).ids
    recall = np.mean([len(set(g) & set(ids[e])) / 10 for g, e in zip(got, exact_idx, strict=True)])
    assert recall >= 0.95, recall


def test_small_collections_use_exact_search() -> None:
    x = small()
    index = VectorIndex.build(np.arange(len(x)), x, IndexConfig())
    assert index.kind == "IndexFlat"
    idx, sims = cosine_top_k(x[:5], x, 10)
    result = index.search(x[:5], 10)
    np.testing.assert_array_equal(result.ids, idx)
    np.testing.assert_allclose(result.scores, sims, atol=1e-5)
    np.testing.assert_allclose(result.distances, 1 - sims, atol=1e-5)


@pytest.mark.parametrize("metric", [Metric.COSINE, Metric.IP, Metric.L2])
@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_upsert_remove_reconstruct(metric: Metric, factory: str) -> None:
    x = small()
    config = IndexConfig(metric=metric, factory=factory, nprobe=16)
    index = VectorIndex.build(np.arange(len(x)) + 100, x, config)
    np.testing.assert_allclose(index.reconstruct(150), _prepare(x[50], metric)[0], atol=1e-6)

    replacement = small(1, seed=9)[0]
    index.upsert(np.array([150]), replacement[None, :])
    assert len(index) == len(x)
    np.testing.assert_allclose(index.reconstruct(150), _prepare(replacement, metric)[0], atol=1e-6)
    assert index.search(replacement[None, :], 1).ids[0, 0] == 150

    assert index.remove(np.array([150, 151, 999_999])) == 2
    assert len(index) == len(x) - 2
    with pytest.raises(KeyError):
        index.reconstruct(150)
    assert 150 not in index.search(replacement[None, :], 50).ids


@pytest.mark.parametrize("metric", [Metric.IP, Metric.L2])
def test_distances_follow_the_metric(metric: Metric) -> None:
    x = small(500)
    index = VectorIndex.build(np.arange(500), x, IndexConfig(metric=metric))
    result = index.search(x[:1], 3)
    j = result.ids[0, 1]
    if metric is Metric.L2:
        assert result.distances[0, 1] == pytest.approx(np.linalg.norm(x[0] - x[j]), rel=1e-4)
        assert result.distances[0, 0] == pytest.approx(0, abs=1e-2)  # sqrt of float round-off
    else:
        assert result.scores[0, 1] == pytest.approx(float(x[0] @ x[j]), rel=1e-4)
        assert result.distances[0, 1] == pytest.approx(-float(x[0] @ x[j]), rel=1e-4)


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16"])
def test_filtered_search_never_returns_an_excluded_id(factory: str) -> None:
    x = small()
    ids = np.arange(len(x), dtype=np.int64)
    index = VectorIndex.build(ids, x, IndexConfig(factory=factory, nprobe=16))
    allowed = ids[::7]
    result = index.search(x[:20], 30, allowed_ids=allowed)
    found = result.ids[result.ids >= 0]
    assert len(found) > 0 and np.isin(found, allowed).all()
    # Exact among the allowed ids for the exact index.
    if factory == "Flat":
        expected = exact_neighbours(
            _prepare(x[:20], Metric.COSINE),
            _prepare(x[allowed], Metric.COSINE),
            allowed,
            30,
        )
        np.testing.assert_array_equal(result.ids, expected)
    empty = index.search(x[:2], 5, allowed_ids=np.array([], dtype=np.int64))
    assert (empty.ids == -1).all()


def test_hnsw_cannot_remove_and_says_so() -> None:
    x = small(300)
    index = VectorIndex.build(np.arange(300), x, IndexConfig(factory="HNSW16"))
    with pytest.raises(ConfigError, match="cannot remove or replace vectors"):
        index.remove(np.array([1]))


def test_bad_inputs_are_refused() -> None:
    index = VectorIndex.build(np.arange(100), small(100), IndexConfig())
    with pytest.raises(InputShapeError, match=r"shape \[n, 32\]"):
        index.search(np.zeros((1, 31), np.float32), 3)
    with pytest.raises(InputShapeError, match="NaN"):
        index.search(np.full((1, 32), np.nan, np.float32), 3)
    with pytest.raises(InputShapeError, match="k must be at least 1"):
        index.search(np.zeros((1, 32), np.float32), 0)
    with pytest.raises(InputShapeError, match="ids must be >= 0"):
        index.add(np.array([-5]), np.zeros((1, 32), np.float32))
    with pytest.raises(ConfigError, match="FAISS cannot build index 'NoSuchIndex'"):
        VectorIndex.build(np.arange(10), small(10), IndexConfig(factory="NoSuchIndex"))
    with pytest.raises(ConfigError, match="unknown metric 'hamming'"):
        Metric.parse("hamming")
    assert Metric.parse("INNER_PRODUCT") is Metric.IP and Metric.parse("COSINE") is Metric.COSINE


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_and_load_give_identical_results(tmp_path: Path, factory: str, mmap: bool) -> None:
    x = small()
    config = IndexConfig(factory=factory, nprobe=4, mmap=mmap)
    index = VectorIndex.build(np.arange(len(x)), x, config)
    manifest = save(index, tmp_path, model_id="m@1", source_watermark=42)
    loaded, generation, _ = load(tmp_path, config, model_id="m@1", dim=32)
    assert generation.source_watermark == 42 and manifest.current.count == len(x)
    assert loaded.nprobe == index.nprobe
    a, b = index.search(x[:50], 10), loaded.search(x[:50], 10)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.distances, b.distances, atol=1e-6)
    assert loaded.mmapped == (mmap and factory.startswith("IVF"))


def test_manifest_mismatch_is_refused(tmp_path: Path) -> None:
    x = small(200)
    save(
        VectorIndex.build(np.arange(200), x, IndexConfig()),
        tmp_path,
        model_id="model-a",
        source_watermark=1,
    )
    with pytest.raises(
        IndexLoadError, match="holds vectors of model-a, not of the configured model model-b"
    ):
        load(tmp_path, IndexConfig(), model_id="model-b")
    with pytest.raises(IndexLoadError, match="has dimension 32, expected 512"):
        load(tmp_path, IndexConfig(), dim=512)
    with pytest.raises(IndexLoadError, match="uses metric cosine, configured l2"):
        load(tmp_path, IndexConfig(metric=Metric.L2))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["current"]["count"] = 999
    manifest["current"]["sha256"] = manifest["current"]["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        IndexLoadError, match="holds 200 vectors of dimension 32; the manifest says 999"
    ):
        load(tmp_path, IndexConfig())


def test_truncated_file_is_reported_and_the_previous_generation_is_used(tmp_path: Path) -> None:
    x = small(300)
    first = VectorIndex.build(np.arange(300), x, IndexConfig())
    save(first, tmp_path, model_id="m", source_watermark=1)
    second = VectorIndex.build(np.arange(301), np.vstack([x, x[:1]]), IndexConfig())
    manifest = save(second, tmp_path, model_id="m", source_watermark=2)
    current = tmp_path / manifest.current.file
    current.write_bytes(current.read_bytes()[:1000])
    loaded, generation, _ = load(tmp_path, IndexConfig())
    assert generation.source_watermark == 1 and len(loaded) == 300
    (tmp_path / manifest.previous.file).write_bytes(b"garbage")
    with pytest.raises(IndexLoadError, match="truncated"):
        load(tmp_path, IndexConfig())


def test_a_corrupt_file_of_the_right_size_is_caught_by_its_checksum(tmp_path: Path) -> None:
    x = small(300)
    manifest = save(
        VectorIndex.build(np.arange(300), x, IndexConfig()),
        tmp_path,
        model_id="m",
        source_watermark=1,
    )
    path = tmp_path / manifest.current.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match="does not match its checksum"):
        load(tmp_path, IndexConfig())


def test_saved_index_is_readable_by_another_process(tmp_path: Path) -> None:
    x = small(500)
    index = VectorIndex.build(np.arange(500) * 2, x, IndexConfig())
    save(index, tmp_path, model_id="m", source_watermark=5)
    np.save(tmp_path / "q.npy", x[:3])
    code = (
        "import numpy as np, sys\n"
        "from hear_features.index import IndexConfig, load\n"
        "from pathlib import Path\n"
        f"idx, gen, _ = load(Path({str(tmp_path)!r}), IndexConfig(), model_id='m')\n"
        f"print(idx.search(np.load({str(tmp_path / 'q.npy')!r}), 3).ids.tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(index.search(x[:3], 3).ids.tolist())


@pytest.mark.parametrize(
    ("setting", "gpus", "build", "use"),
    [
        ("auto", 0, False, False),
        ("auto", 0, True, False),
        ("auto", 2, True, True),
        ("never", 2, True, False),
    ],
)
def test_gpu_selection(setting: str, gpus: int, build: bool, use: bool) -> None:
    assert choose_device(setting, gpus, build).use_gpu is use


def test_gpu_always_without_a_gpu_is_an_error() -> None:
    with pytest.raises(DeviceError, match="faiss has no GPU support"):
        choose_device("always", 0, False)
    with pytest.raises(DeviceError, match="no GPU visible"):
        choose_device("always", 0, True)


def test_this_machine_runs_the_path_its_faiss_build_supports() -> None:
    index = VectorIndex.build(np.arange(100), small(100), IndexConfig())
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    index.search(small(1), 3)
    assert index.on_gpu is has_gpu
