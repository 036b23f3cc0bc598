"""Choosing IVF's ``nprobe`` for a recall target: exact neighbours of held-in queries
(all at once, or over a collection streamed chunk by chunk) and recall against them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import faiss
import numpy as np
from hear_features.index.arrays import check_ids, faiss_metric, prepare
from hear_features.index.config import IndexConfig, Metric

log = logging.getLogger(__name__)

#: Neighbours and queries used to tune nprobe, and the nprobe values tried, in order.
TUNE_K = 10
TUNE_QUERIES = 256
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def exact_neighbours(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int, metric: Metric
) -> np.ndarray:
    flat = faiss.IndexIDMap2(faiss.IndexFlat(vectors.shape[1], faiss_metric(metric)))
    flat.add_with_ids(vectors, ids)
    return flat.search(queries, k)[1]


class RunningTopK:
    """Exact nearest neighbours of a few queries over a collection seen chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int, metric: Metric) -> None:
        self.queries, self.k, self.metric = queries, k, metric
        self.ids = np.full((len(queries), k), -1, np.int64)
        self._keys = np.full((len(queries), k), np.inf, np.float32)  # smaller is closer

    def update(self, x: np.ndarray, ids: np.ndarray) -> None:
        if not len(self.queries) or not len(x):
            return
        if self.metric is Metric.L2:
            keys = (x * x).sum(axis=1)[None, :] - 2 * self.queries @ x.T
        else:
            keys = -(self.queries @ x.T)
        keys = np.concatenate([self._keys, keys.astype(np.float32)], axis=1)
        labels = np.concatenate(
            [self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))], axis=1
        )
        top = (
            np.argpartition(keys, self.k - 1, axis=1)[:, : self.k]
            if keys.shape[1] > self.k
            else np.argsort(keys, axis=1)
        )
        self._keys = np.take_along_axis(keys, top, axis=1)
        self.ids = np.take_along_axis(labels, top, axis=1)
        order = np.argsort(self._keys, axis=1, kind="stable")  # closest first
        self._keys = np.take_along_axis(self._keys, order, axis=1)
        self.ids = np.take_along_axis(self.ids, order, axis=1)


def recall_at(approx: np.ndarray, exact: np.ndarray, self_ids: np.ndarray, k: int) -> float:
    total = 0.0
    for a, e, me in zip(approx, exact, self_ids, strict=True):
        want = [i for i in e if i != me and i >= 0][:k]
        got = {i for i in a if i != me and i >= 0}
        total += len(got.intersection(want)) / max(1, len(want))
    return total / len(approx)


def smallest_nprobe(
    ivf: Any,
    search: Callable[[np.ndarray, int, None], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    query_ids: np.ndarray,
    exact: np.ndarray,
    target: float,
) -> int:
    """The smallest nprobe of ``ivf`` whose recall@10 reaches ``target`` for these stored
    ``queries``, whose exact ``TUNE_K + 1`` neighbours are ``exact``; ``search(q, k, None)``
    answers with (distances, ids) as the index's own searches do."""
    candidates = [p for p in NPROBES if p < ivf.nlist] + [ivf.nlist]
    for nprobe in candidates:
        ivf.nprobe = nprobe
        _, approx = search(queries, TUNE_K + 1, None)
        recall = recall_at(approx, exact, query_ids, TUNE_K)
        if recall >= target:
            break
    log.info("nprobe %d gives recall@10 %.3f on %d held-in queries", nprobe, recall, len(queries))
    return nprobe


def sample_pass(
    chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    n: int,
    dim: int,
    config: IndexConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first pass of a streamed build over ``n`` vectors: a random training sample
    (about ``config.train_sample`` prepared vectors), and held-in queries with their ids."""
    rng = np.random.default_rng(0)
    keep, tune_share = min(1.0, config.train_sample / max(1, n)), TUNE_QUERIES / max(1, n)
    sample, queries, query_ids = [], [], []
    for ids, vectors in chunks():
        x = prepare(vectors, config.metric, dim)
        sample.append(x[rng.random(len(x)) < keep])
        picked = rng.random(len(x)) < tune_share
        queries.append(x[picked])
        query_ids.append(check_ids(ids)[picked])
    return np.concatenate(sample), np.concatenate(queries), np.concatenate(query_ids)


def held_in_queries(
    vectors: np.ndarray, ids: np.ndarray, metric: Metric
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``TUNE_QUERIES`` stored vectors as queries, their ids, and their exact
    ``TUNE_K + 1`` neighbours (each query finds itself; recall leaves it out)."""
    rng = np.random.default_rng(0)
    pick = rng.choice(len(vectors), size=min(TUNE_QUERIES, len(vectors)), replace=False)
    queries = vectors[pick]
    return queries, ids[pick], exact_neighbours(queries, vectors, ids, TUNE_K + 1, metric)
