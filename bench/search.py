"""Single-query search latency on the shipped feature repo, idle and with every core busy.

    .venv/bin/python bench/search.py [--size 100000] [--queries 300]

A copy of ``feature_repo/`` (the product's own views and every field they define) is
applied with the real ``feast apply`` and filled with N synthetic clips and their
metadata. Then, side by side in one run, with the same queries (k = 10):

* ``raw FAISS, 1 thread``: the very index the online store searches, called directly;
  the floor every other row is compared with (``x FAISS`` column);
* ``raw FAISS, 2 threads over lists``: the single-query setting used before (IVF
  ``parallel_mode = 1`` on every core);
* ``numpy exact``: a matrix product over the same vectors;
* ``similar_clips()``: the SDK helper (cached view binding, one ``stat`` per call);
* ``similar_clips(), view re-read per call``: the same with its binding dropped before
  every call, i.e. what the registry work Feast does per call would cost the helper;
* ``feast v2 (stock)``: ``FeatureStore.retrieve_online_documents_v2`` on a store opened
  with ``FeatureStore(repo_path=...)``;
* ``feast v2 (open_store)``: the same call on a store opened with the project's
  :func:`~hear_features.featurestore.repo.open_store`;
* ``feast v2, view resolved once (proposed Feast patch)``: the same call on a
  ``FeatureStore`` subclass that does what docs/feast-upstream-patch.md proposes
  (the view looked up once per call, from the registry cache).

Each row runs idle, then with one busy-loop process per core beside it, and each of those
two ways:

* back to back: the next query as soon as the last one returned, the process never
  sleeps (the "idle" p50/p99 and the ``x FAISS`` ratio come from this);
* paced: one query every ``--gap-ms`` (default 5 ms, 200 queries/s), the way a search
  service sees its queries: it sleeps between them, and the scheduler lets a task that
  wakes from sleep run before CPU-bound ones. A process that never sleeps is itself
  CPU-bound and shares the cores with the busy loops in time slices, so its p99 under
  load is a time slice (a few ms) whatever the search does.

Two tables (back to back, paced), p50/p99 in ms, p99 busy / p99 idle; the first also has
each row's p50 over raw FAISS's and the agreement of its ids with raw FAISS's. Set
``COLUMNS=160`` for untruncated tables.

``hear_features`` is imported before Feast, as in the project's own processes, so Feast's
classes are not instrumented by typeguard (:mod:`hear_features.typechecks`); run with
``HEAR_FEAST_TYPECHECKS=1`` for Feast with its run-time checks, as ``feast`` commands
and programs that import Feast first have it.
"""

from __future__ import annotations

# isort: off
import hear_features  # noqa: F401  (before Feast: see hear_features.typechecks)

# isort: on
import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from feast import FeatureStore
from hear_features.index.arrays import prepare
from rich.console import Console
from rich.table import Table

from hear_features.featurestore.online.store import HearOnlineStore
from hear_features.featurestore.repo import open_store
from hear_features.featurestore.search import clip_search, similar_clips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support code
from tests.support import shipped_repo
from tests.support.vectors import clustered_vectors

console = Console()
K = 10
VIEW = "cough_embeddings"

Search = Callable[[np.ndarray], list[str]]


@contextlib.contextmanager
def busy_cores() -> Iterator[None]:
    """One busy-loop process per core for the duration."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    time.sleep(0.5)  # let them take the cores
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


Timing = tuple[float, float, list[list[str]]]


def timed(search: Search, queries: np.ndarray, gap_s: float = 0.0) -> Timing:
    """p50 and p99 (ms) of one call per query, and what each call found; with ``gap_s``,
    the calls start ``gap_s`` apart (the process sleeps until the next one is due)."""
    search(queries[0])  # warm
    times, found = [], []
    due = time.perf_counter()
    for q in queries:
        if gap_s:
            due += gap_s
            time.sleep(max(0.0, due - time.perf_counter()))
        start = time.perf_counter()
        found.append(search(q))
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), found


def timed_both(searches: dict[str, Search], queries: np.ndarray, gap_s: float) -> dict:
    """Back-to-back and paced timings of every path, keyed (path, "back"/"paced")."""
    out = {}
    for name, run in searches.items():
        out[name, "back"] = timed(run, queries)
        out[name, "paced"] = timed(run, queries, gap_s)
    return out


class PatchedFeatureStore(FeatureStore):
    """Feast with the change docs/feast-upstream-patch.md proposes, for measuring it:
    ``retrieve_online_documents_v2`` checks the view of its features with
    ``get_feature_view``, which re-reads the registry and rebuilds the view; here that
    look-up is the cached one the call already made."""

    def get_feature_view(self, name: str, allow_registry_cache: bool = False) -> Any:
        return self.registry.get_any_feature_view(name, self.project, allow_cache=True)


def paths(repo: Path, n: int) -> dict[str, Search]:
    """Every way of searching the repo that a row measures, each returning clip ids."""
    import faiss  # after hear_features, which sets its OpenMP wait policy

    store = open_store(repo)
    stock = FeatureStore(repo_path=str(repo))
    view = store.get_feature_view(VIEW)
    bound = HearOnlineStore().bind(store.config, view)
    index = bound.sync.current()
    assert index is not None and len(index) == n, "the store's index is not filled"
    ivf = faiss.try_extract_index_ivf(index.index)
    stored = HearOnlineStore().vector_snapshot(store.config, view)
    clip_of = dict(zip(stored.ids.tolist(), stored.entity_ids, strict=True))
    unit = stored.vectors / np.linalg.norm(stored.vectors, axis=1, keepdims=True)
    search = clip_search(store)

    def ids(labels: np.ndarray) -> list[str]:  # FAISS ids are the table's row ids
        return [clip_of[int(i)] for i in labels if i >= 0]

    def raw(q: np.ndarray, threads: int = 1) -> list[str]:
        faiss.omp_set_num_threads(threads)
        if ivf is not None:
            ivf.parallel_mode = 1 if threads > 1 else 0
        try:
            return ids(index.index.search(prepare(q[None], index.config.metric, 512), K)[1][0])
        finally:
            faiss.omp_set_num_threads(1)
            if ivf is not None:
                ivf.parallel_mode = 0

    def exact(q: np.ndarray) -> list[str]:
        sims = unit @ (q / np.linalg.norm(q))
        top = np.argpartition(-sims, K)[:K]
        return ids(stored.ids[top[np.argsort(-sims[top])]])

    def helper(q: np.ndarray) -> list[str]:
        return [h["clip_id"] for h in similar_clips(store, q, K)]

    def rebound(q: np.ndarray) -> list[str]:
        search.invalidate()
        return helper(q)

    def feast_v2(fs: FeatureStore) -> Search:
        def run(q: np.ndarray) -> list[str]:
            out = fs.retrieve_online_documents_v2(
                features=[f"{VIEW}:label", f"{VIEW}:subject_id"], query=q.tolist(), top_k=K
            ).to_dict()
            order = np.argsort(out["distance"])
            return [out["clip_id"][i] for i in order]

        return run

    return {
        "raw FAISS, 1 thread": raw,
        "raw FAISS, 2 threads over lists (old default)": lambda q: raw(q, 2),
        "numpy exact": exact,
        "similar_clips()": helper,
        "similar_clips(), view re-read per call": rebound,
        "feast v2 (stock FeatureStore)": feast_v2(stock),
        "feast v2 (open_store)": feast_v2(store),
        "feast v2, view resolved once (proposed Feast patch)": feast_v2(
            PatchedFeatureStore(repo_path=str(repo))
        ),
    }


def agreement(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repo", type=Path, help="reuse (or create) this repo folder")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="time between paced queries (ms)")
    args = parser.parse_args()
    import faiss

    console.print(
        f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"load {os.getloadavg()[0]:.1f}, faiss {faiss.__version__}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, python {sys.version.split()[0]}"
    )
    # The clips' distribution (fill's seed), not the clips themselves.
    queries = clustered_vectors(args.queries, 512, seed=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or Path(tmp) / "repo"
        if not (repo / "feature_store.yaml").exists():
            start = time.perf_counter()
            shipped_repo.make_repo(repo, "standin")
            shipped_repo.fill(repo, args.size)
            took = time.perf_counter() - start
            console.print(f"shipped repo with {args.size:,} clips in {took:.0f} s")
        searches = paths(repo, args.size)
        gap = args.gap_ms / 1000
        idle = timed_both(searches, queries, gap)
        with busy_cores():
            busy = timed_both(searches, queries, gap)
    truth = idle["raw FAISS, 1 thread", "back"]
    title = f"shipped repo, N = {args.size:,} clips x 512, k = {K}, {args.queries} queries"
    busy_words = f"busy = {os.cpu_count()} busy-loop processes"
    back = Table(title=f"{title}; back to back; {busy_words}")
    for col in (
        "path", "p50 idle", "p99 idle", "x FAISS p50", "p50 busy", "p99 busy", "p99 busy/idle",
        "same ids",
    ):  # fmt: skip
        back.add_column(col, justify="left" if col == "path" else "right")
    paced = Table(title=f"{title}; paced, one query every {args.gap_ms:g} ms; {busy_words}")
    for col in ("path", "p50 idle", "p99 idle", "p50 busy", "p99 busy", "p99 busy/idle"):
        paced.add_column(col, justify="left" if col == "path" else "right")
    for name in searches:
        (p50, p99, found), (b50, b99, _) = idle[name, "back"], busy[name, "back"]
        (q50, q99, _), (c50, c99, _) = idle[name, "paced"], busy[name, "paced"]
        back.add_row(
            name,
            f"{p50:.2f}",
            f"{p99:.2f}",
            f"{p50 / truth[0]:.1f}x",
            f"{b50:.2f}",
            f"{b99:.2f}",
            f"{b99 / p99:.1f}x",
            f"{agreement(found, truth[2]):.3f}",
        )
        paced.add_row(
            name, f"{q50:.2f}", f"{q99:.2f}", f"{c50:.2f}", f"{c99:.2f}", f"{c99 / q99:.1f}x"
        )
    console.print(back)
    console.print(paced)


if __name__ == "__main__":
    main()
