"""Exact nearest neighbours: the reference that the FAISS index is measured against.

:func:`cosine_top_k` is plain numpy, independent of FAISS, so a test that compares the
index with it does not compare FAISS with itself; :func:`exact_neighbours` uses
``faiss.knn`` (a brute-force scan) where the collections are too large for that.
"""

from __future__ import annotations

import faiss
import numpy as np


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def cosine_top_k(
    queries: np.ndarray, corpus: np.ndarray, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the ``k`` nearest corpus rows for each query.

    With ``exclude_self`` the queries are the corpus itself and each row's own match is
    left out (leave-one-out evaluation).
    """
    q = normalise(np.atleast_2d(queries))
    c = normalise(corpus)
    sims = q @ c.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    k = min(k, c.shape[0] - (1 if exclude_self else 0))
    if k <= 0:
        return np.zeros((len(q), 0), dtype=np.int64), np.zeros((len(q), 0), dtype=np.float32)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(sims, idx, axis=1)


def exact_neighbours(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int, *, l2: bool = False
) -> np.ndarray:
    """The ids of the ``k`` nearest ``vectors`` of each query, by brute force
    (inner product, or Euclidean distance with ``l2``); -1 where fewer exist."""
    metric = faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT
    _, positions = faiss.knn(
        np.ascontiguousarray(queries, np.float32),
        np.ascontiguousarray(vectors, np.float32),
        k,
        metric=metric,
    )
    return np.where(positions >= 0, np.asarray(ids)[positions], -1)
