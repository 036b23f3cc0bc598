"""Exact cosine similarity over a matrix of embeddings (numpy, no index).

The reference that approximate indexes are measured against, and the search used where
collections are small (the demo, tests).
"""

from __future__ import annotations

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
