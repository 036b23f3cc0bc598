"""Benchmark vector search; prints one table per collection size.

    .venv/bin/python bench/index.py [--sizes 10000,100000,1000000] [--feast-sizes 10000,100000]
                                    [--milvus]

For each N (clustered synthetic 512-d vectors, see hear_features.synthetic), side by side
in one run:

* ``faiss (auto)``: hear_features.index.VectorIndex with default settings (flat up to
  20k vectors, then IVF with nprobe tuned for recall 0.95);
* ``numpy brute force``: exact cosine by matrix product;
* ``feast v2 + HearOnlineStore (toy view)``: the same index reached through Feast's
  ``retrieve_online_documents_v2`` (for the sizes in --feast-sizes), on a toy view with
  two fields: a comparison row only. The product's own views (every field of the shipped
  ``feature_repo/``) are measured by ``bench/search.py``, which also has the SDK helper,
  idle and busy cores;
* ``feast v2 + milvus-lite`` (with --milvus): Feast's own vector path on a store that
  works here, run in a separate virtualenv under bench-output/ because it installs
  faiss-cpu and pymilvus.

Columns: build seconds, memory (index bytes / raw vector bytes), batched QPS, single
query p50/p99 in ms, recall@10 against exact search on held-out queries.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import faiss
import numpy as np
import psutil
from hear_features.index import IndexConfig, VectorIndex, save
from rich.console import Console
from rich.table import Table

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support code
from tests.support.vectors import clustered_vectors  # noqa: E402

console = Console()
ROOT = Path(__file__).resolve().parents[1]
DIM = 512
K = 10
QUERIES = 200


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ground truth with an exact FAISS flat index (normalised inner product)."""
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(normalise(base))
    return index.search(normalise(queries), k)[1]


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def timed_singles(search, queries: np.ndarray) -> tuple[float, float, np.ndarray]:  # type: ignore[no-untyped-def]
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q[None, :]))
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), np.vstack(found)


def bench_faiss(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, folder: Path) -> dict:
    gc.collect()
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    index = VectorIndex.build(np.arange(len(base)), base, IndexConfig())
    build = time.perf_counter() - start
    grown = psutil.Process().memory_info().rss - rss
    manifest = save(index, folder, model_id="bench", source_watermark=0)
    start = time.perf_counter()
    batch = index.search(queries, K).ids
    qps = len(queries) / (time.perf_counter() - start)
    p50, p99, _ = timed_singles(lambda q: index.search(q, K).ids, queries)
    return {
        "path": f"faiss (auto: {index.kind})",
        "build_s": build,
        "memory": f"{manifest.current.size / base.nbytes:.2f}x file, {grown / base.nbytes:.2f}x RSS",
        "qps": qps,
        "p50": p50,
        "p99": p99,
        "recall": recall(batch, truth),
    }


def bench_numpy(base: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    start = time.perf_counter()
    matrix = normalise(base)
    build = time.perf_counter() - start

    def search(q: np.ndarray) -> np.ndarray:
        sims = normalise(q) @ matrix.T
        part = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        return np.take_along_axis(part, order, axis=1)

    start = time.perf_counter()
    batch = np.vstack([search(queries[i : i + 64]) for i in range(0, len(queries), 64)])
    qps = len(queries) / (time.perf_counter() - start)
    p50, p99, _ = timed_singles(search, queries[:50])
    return {
        "path": "numpy brute force",
        "build_s": build,
        "memory": "1.00x (the matrix)",
        "qps": qps,
        "p50": p50,
        "p99": p99,
        "recall": recall(batch, truth),
    }


FEAST_DEFINITIONS = """
from datetime import timedelta
from pathlib import Path
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, String

doc = Entity(name="doc", join_keys=["doc_id"], value_type=ValueType.STRING)
source = FileSource(
    path=str(Path(__file__).resolve().parent / "docs.parquet"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
)
docs = FeatureView(
    name="docs",
    entities=[doc],
    ttl=timedelta(0),
    schema=[
        Field(name="embedding", dtype=Array(Float32), vector_index=True, vector_search_metric="COSINE"),
        Field(name="label", dtype=String),
    ],
    source=source,
    online=True,
)
"""

FEAST_YAML = """project: bench
provider: local
registry: data/registry.db
offline_store:
  type: duckdb
online_store:
  type: hear_features.featurestore.online_store.HearOnlineStore
  path: data/online.db
entity_key_serialization_version: 3
"""


def bench_feast_plugin(
    base: np.ndarray, queries: np.ndarray, truth: np.ndarray, folder: Path
) -> dict:
    """Write the vectors through HearOnlineStore, then search through Feast's SDK."""
    import datetime as dt

    import pyarrow as pa

    from hear_features.featurestore.online.store import HearOnlineStore
    from hear_features.featurestore.repo import open_store

    folder.mkdir(parents=True)
    (folder / "bench_definitions.py").write_text(FEAST_DEFINITIONS)
    (folder / "feature_store.yaml").write_text(FEAST_YAML)
    subprocess.run(
        [str(Path(sys.executable).with_name("feast")), "apply"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    store = open_store(folder)
    view = store.get_feature_view("docs")
    online = HearOnlineStore()  # writes straight to the store, as the batch engine does
    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    for lo in range(0, len(base), 50_000):
        chunk = base[lo : lo + 50_000]
        table = pa.table(
            {
                "doc_id": [f"doc-{i:07d}" for i in range(lo, lo + len(chunk))],
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(chunk.reshape(-1)), DIM
                ).cast(pa.list_(pa.float32())),
                "label": ["even" if i % 2 == 0 else "odd" for i in range(lo, lo + len(chunk))],
                "event_timestamp": pa.array([now] * len(chunk), pa.timestamp("us", tz="UTC")),
            }
        )
        online.write_arrow(store.config, view, table, "doc_id")
    online.checkpoint(store.config, view)
    build = time.perf_counter() - start

    def search(q: np.ndarray) -> np.ndarray:
        out = store.retrieve_online_documents_v2(
            features=["docs:label"], query=q[0].tolist(), top_k=K
        ).to_dict()
        order = np.argsort(out["distance"])
        return np.array([[int(out["doc_id"][i][4:]) for i in order]])

    search(queries[:1])  # the first call loads the index
    p50, p99, found = timed_singles(search, queries[:100])
    return {
        "path": "feast v2 + HearOnlineStore (toy view)",
        "build_s": build,
        "memory": "(SQLite + index files)",
        "qps": float("nan"),
        "p50": p50,
        "p99": p99,
        "recall": recall(found, truth[:100]),
    }


MILVUS_SCRIPT = r"""
import datetime as dt, json, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd
folder = Path(sys.argv[1]); data = np.load(sys.argv[2]); queries = np.load(sys.argv[3])
folder.mkdir(parents=True, exist_ok=True)
(folder / "bench_definitions.py").write_text(Path(sys.argv[4]).read_text())
(folder / "feature_store.yaml").write_text(
    "project: bench\nprovider: local\nregistry: data/registry.db\n"
    "online_store:\n  type: milvus\n  path: data/milvus.db\n  embedding_dim: 512\n"
    "  index_type: FLAT\n  metric_type: COSINE\nentity_key_serialization_version: 3\n"
)
subprocess.run([str(Path(sys.executable).with_name("feast")), "apply"], cwd=folder, check=True, capture_output=True)
from feast import FeatureStore
store = FeatureStore(repo_path=str(folder))
now = pd.Timestamp.now(tz="UTC")
start = time.perf_counter()
for lo in range(0, len(data), 5000):
    chunk = data[lo:lo + 5000]
    df = pd.DataFrame({"doc_id": [f"doc-{i:07d}" for i in range(lo, lo + len(chunk))],
                       "embedding": list(chunk), "label": ["x"] * len(chunk), "event_timestamp": now})
    store.write_to_online_store("docs", df)
build = time.perf_counter() - start
times, found = [], []
for q in queries[:100]:
    t = time.perf_counter()
    out = store.retrieve_online_documents_v2(features=["docs:label"], query=q.tolist(), top_k=10).to_dict()
    times.append((time.perf_counter() - t) * 1000)
    order = np.argsort(out["distance"])
    found.append([int(out["doc_id"][i][4:]) for i in order][:10])
print(json.dumps({"build_s": build, "p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)), "found": found}))
"""


def milvus_python() -> Path:
    """A virtualenv with feast[milvus] (it pulls faiss-cpu), kept apart from .venv."""
    venv = ROOT / "bench-output" / "milvus-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        console.print(
            "creating bench-output/milvus-venv with feast[milvus] (one-time, a few minutes)"
        )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "feast[milvus]==0.67.0"], check=True
        )
    return python


def bench_milvus(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, folder: Path) -> dict:
    folder.mkdir(parents=True)
    np.save(folder / "base.npy", base)
    np.save(folder / "queries.npy", queries)
    (folder / "defs.txt").write_text(FEAST_DEFINITIONS)
    (folder / "run.py").write_text(MILVUS_SCRIPT)
    proc = subprocess.run(
        [
            str(milvus_python()),
            str(folder / "run.py"),
            str(folder / "repo"),
            str(folder / "base.npy"),
            str(folder / "queries.npy"),
            str(folder / "defs.txt"),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "path": "feast v2 + milvus-lite",
        "build_s": out["build_s"],
        "memory": "(milvus-lite file)",
        "qps": float("nan"),
        "p50": out["p50"],
        "p99": out["p99"],
        "recall": recall(np.array(out["found"]), truth[:100]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--feast-sizes", default="10000,100000")
    parser.add_argument(
        "--milvus", action="store_true", help="also run Feast + milvus-lite (separate venv)"
    )
    parser.add_argument("--milvus-sizes", default="10000")
    args = parser.parse_args()
    console.print(
        f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} OpenMP threads), python {sys.version.split()[0]}"
    )
    feast_sizes = {int(s) for s in args.feast_sizes.split(",") if s}
    milvus_sizes = {int(s) for s in args.milvus_sizes.split(",") if s}
    for n in (int(s) for s in args.sizes.split(",")):
        data = clustered_vectors(n + QUERIES, DIM, seed=n)
        base, queries = data[:n], data[n:]
        truth = exact_top_k(base, queries, K)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(bench_faiss(base, queries, truth, Path(tmp) / "faiss"))
            rows.append(bench_numpy(base, queries, truth))
            if n in feast_sizes:
                rows.append(bench_feast_plugin(base, queries, truth, Path(tmp) / "feast"))
            if args.milvus and n in milvus_sizes:
                rows.append(bench_milvus(base, queries, truth, Path(tmp) / "milvus"))
        table = Table(
            title=f"N = {n:,} vectors x {DIM} (raw {base.nbytes / 2**20:,.0f} MiB), k = {K}, {QUERIES} held-out queries"
        )
        for col in ("path", "build s", "memory", "batched QPS", "p50 ms", "p99 ms", "recall@10"):
            table.add_column(col, justify="left" if col in ("path", "memory") else "right")
        for r in rows:
            qps = "-" if np.isnan(r["qps"]) else f"{r['qps']:,.0f}"
            table.add_row(
                r["path"],
                f"{r['build_s']:.1f}",
                r["memory"],
                qps,
                f"{r['p50']:.2f}",
                f"{r['p99']:.2f}",
                f"{r['recall']:.3f}",
            )
        console.print(table)
        del data, base, queries
        gc.collect()


if __name__ == "__main__":
    main()
