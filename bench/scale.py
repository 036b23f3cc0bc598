"""A collection larger than memory on one machine: the compressed index, streamed.

    flock /work/wt/bench.lock .venv/bin/python bench/scale.py [--n 5000000]

N clustered synthetic 512-d vectors (hear_features.synthetic) are generated on the fly,
chunk by chunk, never all at once: the raw float32 collection (10 GB at 5M) never sits
in memory. With the default settings (``IndexConfig()``: above 1M vectors ``auto``
picks ``IVF{nlist},RaBitQ`` with exact re-ranking of 10*k candidates from a memory-mapped
float32 file) the script:

1. builds the index with ``VectorIndex.build_streamed`` (train on a sample, add in
   chunks) and saves it; build time and the process's peak RSS;
2. loads it as a server would, and reports the index's memory: file sizes and the
   resident memory of the loaded index as multiples of the raw float32 vectors;
3. searches 200 held-out queries (same distribution, not in the index): recall@10
   against exact search (computed by a streamed exact scan), batched QPS, and single-
   query p50/p99 with one thread (as the API's workers search) and with OpenMP's two;
4. the same index without re-ranking, side by side, to show what re-ranking buys.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np
import psutil
from hear_features.index import IndexConfig, VectorIndex, load, save
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support code
from tests.support.vectors import clustered_vector_chunks

console = Console()
ROOT = Path(__file__).resolve().parents[1]
DIM = 512
K = 10
QUERIES = 200


def collection(n: int, chunk: int, seed: int) -> tuple[Callable[[], Iterator], np.ndarray]:
    """A re-runnable chunk source over the first ``n`` vectors, and the held-out queries
    (the ``QUERIES`` vectors that follow them in the same stream)."""

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        start = 0
        for block in clustered_vector_chunks(n + QUERIES, DIM, chunk=chunk, seed=seed):
            block = block[: max(0, n - start)]
            if len(block):
                yield np.arange(start, start + len(block), dtype=np.int64), block
            start += len(block)

    tail = None
    for block in clustered_vector_chunks(n + QUERIES, DIM, chunk=chunk, seed=seed):
        tail = block if tail is None else np.concatenate([tail, block])[-QUERIES:]
    assert tail is not None
    return chunks, tail[-QUERIES:]


def exact_top_k(chunks: Callable[[], Iterator], queries: np.ndarray) -> np.ndarray:
    """Exact cosine top-k of the queries, one chunk at a time (FAISS flat per chunk)."""
    q = normalise(queries)
    best_s = np.full((len(q), K), -np.inf, np.float32)
    best_i = np.full((len(q), K), -1, np.int64)
    for ids, block in chunks():
        flat = faiss.IndexFlatIP(DIM)
        flat.add(normalise(block))
        s, i = flat.search(q, K)
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, ids[i]], axis=1)
        order = np.argsort(-s_all, axis=1)[:, :K]
        best_s = np.take_along_axis(s_all, order, axis=1)
        best_i = np.take_along_axis(i_all, order, axis=1)
    return best_i


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def search_row(label: str, index: VectorIndex, queries: np.ndarray, truth: np.ndarray) -> list:
    index.search(queries[:8], K)  # warm-up
    start = time.perf_counter()
    found = index.search(queries, K).ids
    qps = len(queries) / (time.perf_counter() - start)
    singles = {}
    for threads in (1, None):
        times = []
        for q in queries:
            t = time.perf_counter()
            index.search(q, K, threads=threads)
            times.append(1000 * (time.perf_counter() - t))
        singles[threads] = (np.percentile(times, 50), np.percentile(times, 99))
    return [
        label,
        f"{recall(found, truth):.3f}",
        f"{qps:,.0f}",
        f"{singles[1][0]:.2f}",
        f"{singles[1][1]:.2f}",
        f"{singles[None][0]:.2f}",
        f"{singles[None][1]:.2f}",
    ]


def serve(folder: Path, config: IndexConfig) -> None:
    """Load the saved index in this fresh process, as a server would, and search it."""
    queries, truth = np.load(folder / "queries.npy"), np.load(folder / "truth.npy")
    before = psutil.Process().memory_info()
    start = time.perf_counter()
    index, generation, _ = load(folder, config, model_id="bench", verify=False)
    load_s = time.perf_counter() - start
    loaded = psutil.Process().memory_info()
    rows = [search_row(f"{index.kind}, re-rank {config.rerank * K}", index, queries, truth)]
    searched = psutil.Process().memory_info()
    plain = VectorIndex(index.index, config.model_copy(update={"rerank": 0}))
    rows.append(search_row(f"{index.kind}, no re-ranking", plain, queries, truth))
    print(
        json.dumps(
            {
                "file": generation.file,
                "mapping_file": generation.mapping_file,
                "raw_file": generation.raw_file,
                "nprobe": generation.nprobe,
                "load_s": load_s,
                "anon_after_load": (loaded.rss - loaded.shared) - (before.rss - before.shared),
                "anon_after_search": (searched.rss - searched.shared)
                - (before.rss - before.shared),
                "file_pages": searched.shared - before.shared,
                "rows": rows,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5_000_000)
    parser.add_argument("--chunk", type=int, default=200_000)
    parser.add_argument("--folder", type=Path, default=ROOT / "bench-output" / "scale")
    parser.add_argument("--keep", action="store_true", help="keep the index folder afterwards")
    parser.add_argument(
        "--compress-above",
        type=int,
        default=IndexConfig().compress_above,
        help="IndexConfig.compress_above (lower it to try the script on a small N)",
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, IndexConfig(compress_above=args.compress_above))
        return
    n = args.n
    raw_bytes = n * DIM * 4
    console.print(
        f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"faiss {faiss.__version__}, python {sys.version.split()[0]}; "
        f"N = {n:,} x {DIM} (raw float32 {raw_bytes / 2**30:.2f} GiB)"
    )
    shutil.rmtree(args.folder, ignore_errors=True)
    chunks, queries = collection(n, args.chunk, seed=n)
    start = time.perf_counter()
    truth = exact_top_k(chunks, queries)
    console.print(
        f"exact top-{K} of {QUERIES} queries, streamed: {time.perf_counter() - start:.0f} s"
    )

    config = IndexConfig(compress_above=args.compress_above)
    before = rss()
    start = time.perf_counter()
    index = VectorIndex.build_streamed(chunks, n, DIM, config, args.folder)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    manifest = save(index, args.folder, model_id="bench", source_watermark=0)
    save_s = time.perf_counter() - start
    build_peak = peak_rss()
    kind = index.kind
    del index
    gc.collect()

    np.save(args.folder / "queries.npy", queries)
    np.save(args.folder / "truth.npy", truth)
    served = json.loads(
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--serve",
                str(args.folder),
                "--compress-above",
                str(args.compress_above),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    files = {p.name: p.stat().st_size for p in args.folder.iterdir()}
    index_file = files[served["file"]]
    mapping_file = files[served["mapping_file"]]
    vectors_file = files[served["raw_file"]]
    load_s = served["load_s"]
    rows = served["rows"]

    build = Table(title=f"streamed build, N = {n:,}")
    for col in ("what", "value"):
        build.add_column(col, justify="left" if col == "what" else "right")
    build.add_row("index", kind)
    build.add_row("build s (train on a sample, add in chunks, tune nprobe)", f"{build_s:,.0f}")
    build.add_row("save s", f"{save_s:.1f}")
    build.add_row("peak RSS of the whole run so far, GiB", f"{build_peak / 2**30:.2f}")
    build.add_row("RSS before the build, GiB", f"{before / 2**30:.2f}")
    build.add_row("load s (fresh process)", f"{load_s:.1f}")
    memory = Table(title="memory, as a multiple of the raw float32 vectors")
    for col in ("what", "bytes", "x raw"):
        memory.add_column(col, justify="left" if col == "what" else "right")
    for what, size in (
        ("index file (codes, ids, centroids)", index_file),
        ("id -> row mapping file", mapping_file),
        ("index + mapping files", index_file + mapping_file),
        ("server process: anonymous RSS growth after load", served["anon_after_load"]),
        ("server process: anonymous RSS growth after searching", served["anon_after_search"]),
        ("server process: vectors file pages resident after searching", served["file_pages"]),
        ("vectors file on disk (memory-mapped, paged in on demand)", vectors_file),
    ):
        memory.add_row(what, f"{size / 2**20:,.0f} MiB", f"{size / raw_bytes:.3f}x")
    search = Table(
        title=f"search in a fresh process, {QUERIES} held-out queries, k = {K}, "
        f"nprobe {served['nprobe']}"
    )
    for col in (
        "index",
        "recall@10",
        "batched QPS",
        "p50 ms 1 thr",
        "p99 ms 1 thr",
        "p50 ms 2 thr",
        "p99 ms 2 thr",
    ):
        search.add_column(col, justify="left" if col == "index" else "right")
    for row in rows:
        search.add_row(*row)
    for table in (build, memory, search):
        console.print(table)
    console.print(f"manifest: {manifest.current.file}, {manifest.current.raw_rows:,} rows on file")
    if not args.keep:
        shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
