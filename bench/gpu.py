"""FAISS on the GPU against FAISS on the CPU, same vectors, same run; prints tables.

    python bench/gpu.py [--n 1000000] [--queries 1000]    (needs faiss-gpu and a GPU)
    python bench/gpu.py --dry-run                         (CPU only: what a CPU can run)

``make bench-gpu`` runs this (after ``bench/encoder.py --device gpu``) in a virtualenv
with the ``gpu`` extra. For N clustered synthetic 512-d vectors (the same generator as
bench/index.py) it measures, with k = 10 and cosine similarity:

* exact search (a flat index) on the GPU and on the CPU: batched QPS and single-query p50;
* IVF search (``IVF{4*sqrt(N)},Flat``, nprobe 32): trained once on the GPU, then the same
  trained index searched on the GPU and, copied back, on the CPU;
* agreement: for exact search, the share of the CPU's top-10 ids that the GPU returns
  and the largest score difference; for IVF the same between the two copies of one
  index; and each path's recall@10 against exact CPU search.

``--dry-run`` runs every CPU part at a small N (the GPU rows say why they are missing),
so the script itself is tested on machines without a GPU. Without ``--dry-run`` a
missing GPU is an error (exit status 2), never a silent CPU-only run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from hear_features.index import ivf_lists
from hear_features.index.gpu import gpu_count
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support code
from tests.support.vectors import clustered_vectors

console = Console()
K = 10
NPROBE = 32
SINGLE_QUERIES = 200


@dataclass(frozen=True)
class Run:
    """One index searched one way: its answers and how fast."""

    path: str
    device: str
    ids: np.ndarray  # int64 [queries, K]
    scores: np.ndarray  # float32 [queries, K]
    build_s: float
    qps: float
    p50_ms: float


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed(path: str, device: str, index: Any, queries: np.ndarray, build_s: float) -> Run:
    """Batched search of every query (QPS), then single queries one by one (p50)."""
    index.search(queries[:16], K)  # warm-up: GPU kernels, memory pools
    start = time.perf_counter()
    scores, ids = index.search(queries, K)
    qps = len(queries) / (time.perf_counter() - start)
    times = []
    for q in queries[:SINGLE_QUERIES]:
        t = time.perf_counter()
        index.search(q[None, :], K)
        times.append(time.perf_counter() - t)
    return Run(path, device, ids, scores, build_s, qps, 1000 * float(np.median(times)))


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of the ids in each row of ``b`` that the same row of ``a`` also holds."""
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b, strict=True)]))


def max_score_gap(a: Run, b: Run) -> float:
    """Largest difference between the i-th best scores of two runs (rank by rank)."""
    return float(np.max(np.abs(a.scores - b.scores)))


def training_sample(base: np.ndarray, size: int = 160_000) -> np.ndarray:
    if len(base) <= size:
        return base
    return base[np.sort(np.random.default_rng(0).choice(len(base), size, replace=False))]


def build_cpu(base: np.ndarray, factory: str) -> tuple[Any, float]:
    start = time.perf_counter()
    index = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(training_sample(base))
    index.add(base)
    if factory != "Flat":
        faiss.extract_index_ivf(index).nprobe = NPROBE
    return index, time.perf_counter() - start


def build_gpu(resources: Any, base: np.ndarray, factory: str) -> tuple[Any, float]:
    """Train and fill ``factory`` on the GPU (index_cpu_to_gpu of the untrained index)."""
    start = time.perf_counter()
    cpu = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index = faiss.index_cpu_to_gpu(resources, 0, cpu)
    if not index.is_trained:
        index.train(training_sample(base))
    index.add(base)
    if factory != "Flat":
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", NPROBE)
    return index, time.perf_counter() - start


def measure(n: int, n_queries: int, use_gpu: bool) -> tuple[list[Run], list[list[str]]]:
    data = normalise(clustered_vectors(n + n_queries, 512, seed=n))
    base, queries = data[:n], data[n:]
    ivf = f"IVF{min(ivf_lists(n), n // 39)},Flat"  # at least 39 training points per list
    runs: list[Run] = []
    flat_cpu, seconds = build_cpu(base, "Flat")
    runs.append(timed("exact (Flat)", "cpu", flat_cpu, queries, seconds))
    exact = runs[-1]
    del flat_cpu
    agreement: list[list[str]] = []
    if use_gpu:
        resources = faiss.StandardGpuResources()
        flat_gpu, seconds = build_gpu(resources, base, "Flat")
        runs.append(timed("exact (Flat)", "gpu", flat_gpu, queries, seconds))
        agreement.append(_agree("exact: GPU vs CPU", runs[-1], exact, exact))
        del flat_gpu
        ivf_gpu, seconds = build_gpu(resources, base, ivf)
        runs.append(timed(f"{ivf}, nprobe {NPROBE}", "gpu", ivf_gpu, queries, seconds))
        start = time.perf_counter()
        ivf_cpu = faiss.index_gpu_to_cpu(ivf_gpu)
        copy_s = time.perf_counter() - start
        faiss.extract_index_ivf(ivf_cpu).nprobe = NPROBE
        runs.append(timed(f"{ivf}, nprobe {NPROBE} (GPU-trained)", "cpu", ivf_cpu, queries, copy_s))
        agreement.append(_agree("IVF: GPU vs CPU, same trained index", runs[-2], runs[-1], exact))
    else:
        ivf_cpu, seconds = build_cpu(base, ivf)
        runs.append(timed(f"{ivf}, nprobe {NPROBE}", "cpu", ivf_cpu, queries, seconds))
        agreement.append(_agree("IVF vs exact, both CPU (dry run)", runs[-1], exact, exact))
    return runs, agreement


def _agree(what: str, a: Run, b: Run, exact: Run) -> list[str]:
    return [
        what,
        f"{overlap(a.ids, b.ids):.4f}",
        f"{max_score_gap(a, b):.2e}",
        f"{overlap(a.ids, exact.ids):.3f}",
        f"{overlap(b.ids, exact.ids):.3f}",
    ]


def tables(runs: list[Run], agreement: list[list[str]], title: str, note: str) -> list[Table]:
    speed = Table(title=title)
    for col in ("index", "device", "build s", "batched QPS", "single p50 ms"):
        speed.add_column(col, justify="left" if col in ("index", "device") else "right")
    for r in runs:
        speed.add_row(r.path, r.device, f"{r.build_s:.1f}", f"{r.qps:,.0f}", f"{r.p50_ms:.3f}")
    if note:
        speed.add_row("(no GPU rows)", note, "", "", "")
    agree = Table(title="agreement, top-10 ids and scores (1.0 = identical id sets)")
    for col in ("compared", "id overlap", "max score gap", "recall@10 a", "recall@10 b"):
        agree.add_column(col, justify="left" if col == "compared" else "right")
    for row in agreement:
        agree.add_row(*row)
    return [speed, agree]


def main(argv: list[str] | None = None, out: Callable[[Any], None] = console.print) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the collection")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dry-run", action="store_true", help="CPU only, small N")
    args = parser.parse_args(argv)
    gpus = gpu_count(faiss)
    out(
        f"machine: {os.cpu_count()} CPUs, faiss {faiss.__version__} "
        f"({'GPU build' if hasattr(faiss, 'StandardGpuResources') else 'CPU build'}, "
        f"{gpus} GPU(s) visible), python {sys.version.split()[0]}"
    )
    note = ""
    if gpus == 0:
        note = "faiss sees no GPU" if hasattr(faiss, "StandardGpuResources") else "faiss-cpu build"
        if not args.dry_run:
            out(f"no GPU ({note}): run on a machine with an NVIDIA GPU, or pass --dry-run")
            return 2
    n = min(args.n, 30_000) if args.dry_run else args.n
    queries = min(args.queries, 200) if args.dry_run else args.queries
    runs, agreement = measure(n, queries, use_gpu=gpus > 0)
    singles = min(queries, SINGLE_QUERIES)
    title = f"N = {n:,} x 512, k = {K}, {queries} queries (p50 over {singles} single queries)"
    for table in tables(runs, agreement, title, note):
        out(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
