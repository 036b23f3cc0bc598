"""Arrays in and out of FAISS: id and vector checks, the metric conventions every
result follows, and exact re-ranking of candidates from stored float32 vectors.

Free functions over numpy arrays (in the style of FAISS's contrib), shared by
:class:`~hear_features.index.vector_index.VectorIndex` and the nprobe tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from hear_features.index.config import Metric
from hear_features.index.raw_vectors import RawVectors

from hear_features.errors import InputShapeError


@dataclass(frozen=True)
class SearchResult:
    """Neighbours of each query; rows are padded with id -1 where fewer were found."""

    ids: np.ndarray  # int64 [q, k]
    distances: np.ndarray  # float32 [q, k], smaller is closer
    scores: np.ndarray  # float32 [q, k], larger is closer

    def hits(self, row: int = 0) -> list[tuple[int, float, float]]:
        """(id, distance, score) of one query's real hits, best first."""
        keep = self.ids[row] >= 0
        return list(
            zip(
                self.ids[row][keep].tolist(),
                self.distances[row][keep].tolist(),
                self.scores[row][keep].tolist(),
                strict=True,
            )
        )


def faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT


def check_ids(ids: Any) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise InputShapeError(
            f"ids must be a 1-D array of integers, got shape {list(arr.shape)} {arr.dtype}"
        )
    if arr.size and arr.min() < 0:
        raise InputShapeError("ids must be >= 0")
    return np.ascontiguousarray(arr, dtype=np.int64)


def prepare(vectors: Any, metric: Metric, dim: int | None = None) -> np.ndarray:
    """float32 C-contiguous [n, d]; unit rows for cosine; finite or an error."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise InputShapeError(
            f"vectors must have shape [n, {dim or 'd'}], got {list(np.shape(vectors))}"
        )
    if not np.isfinite(x).all():
        raise InputShapeError("vectors contain NaN or infinite values")
    x = np.ascontiguousarray(x)
    if metric is Metric.COSINE:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, np.float32(1e-12))
    return x.astype(np.float32, copy=False)


#: The largest float32, and the smallest normal one: a squared norm outside
#: (``_F32_TINY``, ``_F32_MAX``) overflows or underflows FAISS's float32 distances.
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


def check_vectors(vectors: Any, metric: Metric, what: str = "query vector") -> np.ndarray:
    """``vectors`` as float32 [n, d] if FAISS can compute their distances faithfully, else
    :class:`InputShapeError` naming the row and the problem.

    Norms are computed in float64, because float32 hides the problem: ``[1e30] * 512`` is
    finite in float32 but its squared norm is not, so a cosine search normalises it to
    zeros and answers arbitrary clips at distance 1.0. Refused: NaN or infinite values,
    values beyond float32's range, squared norms beyond float32's range (distances would
    overflow) and, for cosine, vectors with no direction (zero, or so small that their
    squared norm underflows float32).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise InputShapeError(f"a {what} must be a flat list of numbers, got shape {list(x.shape)}")
    # One pass decides for the usual, valid queries (a NaN, an infinity or a value beyond
    # float32's range makes its row's squared norm NaN or too large); the passes below
    # only say what is wrong. Every search checks its queries, so this is on the hot path.
    squared = np.einsum("ij,ij->i", x, x)
    lowest = _F32_TINY if metric is Metric.COSINE else -1.0
    if ((squared > lowest) & (squared < _F32_MAX)).all():
        return np.ascontiguousarray(x, dtype=np.float32)
    finite = np.asarray(np.isfinite(x).all(axis=1))
    squared = np.full(len(x), np.inf)
    squared[finite] = np.einsum("ij,ij->i", x[finite], x[finite])
    too_small = np.zeros(len(x), bool)
    if metric is Metric.COSINE:
        too_small = np.asarray(~(squared > _F32_TINY))
    bad = ~finite | ~(squared < _F32_MAX) | too_small
    if bad.any():
        row = int(np.argmax(bad))
        where = f"{what} {row}" if len(x) > 1 else f"the {what}"
        norm = float(np.sqrt(squared[row]))
        if not finite[row]:
            raise InputShapeError(f"{where} contains NaN or infinite values (finite numbers only)")
        if np.abs(x[row]).max() > _F32_MAX:
            raise InputShapeError(f"{where} has values beyond float32's range (about 3.4e38)")
        if too_small[row]:
            raise InputShapeError(
                f"{where} has norm {norm:.3g}: a (near-)zero vector has no direction, so "
                "cosine similarity to it means nothing"
            )
        raise InputShapeError(
            f"{where} has norm {norm:.3g}; its square overflows float32 distance "
            "computations (the norm must be below about 1.8e19)"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def training_sample(x: np.ndarray, limit: int) -> np.ndarray:
    if len(x) <= limit:
        return x
    pick = np.random.default_rng(0).choice(len(x), size=limit, replace=False)
    return x[np.sort(pick)]


def search_result(labels: np.ndarray, raw: np.ndarray, metric: Metric) -> SearchResult:
    missing = labels < 0
    if metric is Metric.L2:
        distances = np.sqrt(np.maximum(raw, 0))
        scores = -distances
    elif metric is Metric.COSINE:
        scores = np.clip(raw, -1.0, 1.0)  # float round-off can put a self-match at 1 + 1e-7
        distances = 1.0 - scores
    else:
        scores = raw
        distances = -raw
    distances = np.where(missing, np.inf, distances).astype(np.float32)
    scores = np.where(missing, -np.inf, scores).astype(np.float32)
    return SearchResult(labels.astype(np.int64), distances, scores)


def rerank(
    q: np.ndarray, labels: np.ndarray, raw: RawVectors, k: int, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each row's candidate ``labels`` by exact distance, in FAISS's raw
    convention (inner product, or squared L2), from the stored float32 vectors."""
    nq, fetch = labels.shape
    rows = np.where(labels >= 0, raw.rows_of(labels.ravel()).reshape(nq, fetch), -1)
    valid = rows >= 0
    vectors = raw.get(rows[valid])
    exact = np.full((nq, fetch), np.nan, np.float32)
    owner = np.nonzero(valid)[0]
    if metric is Metric.L2:
        diff = vectors - q[owner]
        exact[valid] = np.einsum("ij,ij->i", diff, diff)
        order = np.argsort(np.where(valid, exact, np.inf), axis=1, kind="stable")
    else:
        exact[valid] = np.einsum("ij,ij->i", vectors, q[owner])
        order = np.argsort(np.where(valid, -exact, np.inf), axis=1, kind="stable")
    order = order[:, :k]
    best = np.take_along_axis(exact, order, axis=1)
    ids = np.where(
        np.take_along_axis(valid, order, axis=1), np.take_along_axis(labels, order, axis=1), -1
    )
    pad = k - best.shape[1]
    if pad > 0:
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=np.nan)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return best, ids
