"""``VectorIndex``: a thin, explicit wrapper over one FAISS index keyed by int64 ids.

What it adds to FAISS, and nothing more:

* one id scheme for every index type: IVF indexes keep external ids natively (with a
  hashtable direct map, so vectors can be reconstructed and removed); flat and graph
  indexes are wrapped in ``IndexIDMap2``;
* the metric conventions of :class:`~hear_features.index.config.Metric` (cosine =
  normalised inner product; every result has a distance and a score);
* upsert (remove, then add) and filtered search through FAISS ID selectors, with a
  final check that no id outside the allowed set is returned;
* the automatic choice of flat or IVF, and of ``nprobe`` for a recall target;
* a lock, because GPU indexes are not thread-safe and writes must not race searches,
  and OpenMP settings per call (one thread for single queries).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from hear_features.index.config import IndexConfig, Metric
from hear_features.index.gpu import GpuClone, select_device

from hear_features.errors import ConfigError, InputShapeError

log = logging.getLogger(__name__)

#: Queries per search call at or above which FAISS's flat search uses BLAS.
BLAS_THRESHOLD = 4
#: Neighbours and queries used to tune nprobe, and the nprobe values tried, in order.
_TUNE_K = 10
_TUNE_QUERIES = 256
_NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


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


class VectorIndex:
    """Vectors keyed by int64 ids, searchable by similarity."""

    def __init__(self, index: Any, config: IndexConfig, *, nprobe: int | None = None) -> None:
        self.index = index
        self.config = config
        self.dim = int(index.d)
        self._lock = ReadWriteLock()
        self._gpu: GpuClone | None = None
        self.mmapped = False
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and nprobe is not None:
            ivf.nprobe = nprobe
        # Flat search on a handful of queries skips BLAS unless this is lowered (global).
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        self._want_gpu = select_device(config.use_gpu, faiss).use_gpu

    # ---- construction ---------------------------------------------------------------

    @classmethod
    def empty(cls, dim: int, config: IndexConfig) -> VectorIndex:
        """A flat (exact) index: right for small collections, trainable later."""
        return cls(
            _with_ids(
                faiss.index_factory(dim, config.factory_for(0), _faiss_metric(config.metric))
            ),
            config,
        )

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, config: IndexConfig) -> VectorIndex:
        """Build the index the configuration calls for, train it, add everything, tune it."""
        ids = _check_ids(ids)
        x = _prepare(vectors, config.metric)
        if len(ids) != len(x):
            raise InputShapeError(f"{len(ids)} ids for {len(x)} vectors")
        factory = config.factory_for(len(x))
        try:
            raw = faiss.index_factory(x.shape[1], factory, _faiss_metric(config.metric))
        except RuntimeError as exc:
            raise ConfigError(f"FAISS cannot build index {factory!r}: {exc}") from exc
        if not raw.is_trained:
            raw.train(_training_sample(x, config.train_sample))
        hnsw = _hnsw(raw)
        if hnsw is not None:
            hnsw.efSearch = config.hnsw_ef_search
        index = _with_ids(raw)
        if len(x):
            index.add_with_ids(x, ids)
        built = cls(index, config)
        if faiss.try_extract_index_ivf(index) is not None:
            built.set_nprobe(config.nprobe or built.tune_nprobe(x, ids))
        log.info("built %s over %d vectors", factory, len(x))
        return built

    # ---- facts ------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        """A short description: the inner index type and its search parameter."""
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            return (
                f"IVF{ivf.nlist} ({type(faiss.downcast_index(ivf)).__name__}), nprobe {ivf.nprobe}"
            )
        inner = (
            faiss.downcast_index(self.index.index)
            if isinstance(self.index, faiss.IndexIDMap2)
            else self.index
        )
        return type(inner).__name__

    @property
    def nprobe(self) -> int | None:
        ivf = faiss.try_extract_index_ivf(self.index)
        return int(ivf.nprobe) if ivf is not None else None

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    def ids(self) -> np.ndarray:
        """Every stored id (int64), in no particular order."""
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is None:
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        invlists = ivf.invlists
        assert invlists is not None
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if invlists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    # ---- writes -----------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under new ids (use :meth:`upsert` when ids may exist)."""
        ids = _check_ids(ids)
        x = _prepare(vectors, self.config.metric, self.dim)
        with self._lock.write():
            self._writable()
            self.index.add_with_ids(x, ids)
            self._drop_gpu_copy()

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the vectors of existing ids and add the others."""
        ids = _check_ids(ids)
        x = _prepare(vectors, self.config.metric, self.dim)
        with self._lock.write():
            self._writable()
            self._remove(ids)
            self.index.add_with_ids(x, ids)
            self._drop_gpu_copy()

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (unknown ids are ignored); returns how many were removed."""
        ids = _check_ids(ids)
        with self._lock.write():
            self._writable()
            removed = self._remove(ids)
            self._drop_gpu_copy()
            return removed

    def _remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0 or len(self) == 0:
            return 0
        try:
            return int(self.index.remove_ids(faiss.IDSelectorArray(ids)))
        except RuntimeError as exc:
            raise ConfigError(
                f"this index type ({self.kind}) cannot remove or replace vectors; "
                "rebuild it instead (HNSW indexes do not support removal)"
            ) from exc

    def set_nprobe(self, nprobe: int) -> None:
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            with self._lock.write():
                ivf.nprobe = int(min(max(1, nprobe), ivf.nlist))
                self._drop_gpu_copy()

    # ---- reads ------------------------------------------------------------------------

    def reconstruct(self, id_: int) -> np.ndarray:
        """The stored vector of ``id_`` (unit length for cosine indexes)."""
        with self._lock.read():
            try:
                return np.asarray(self.index.reconstruct(int(id_)), dtype=np.float32)
            except RuntimeError as exc:
                raise KeyError(id_) from exc

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        threads: int | None = None,
    ) -> SearchResult:
        """The ``k`` nearest stored vectors of each query, optionally among ``allowed_ids``.

        ``threads=None`` tunes OpenMP for the lowest latency of this one call (and runs
        alone). A server that searches from several threads at once passes ``threads=1``:
        its CPU searches then run side by side, one core each, without OpenMP threads
        competing for the same cores.
        """
        if k < 1:
            raise InputShapeError(f"k must be at least 1, got {k}")
        q = _prepare(queries, self.config.metric, self.dim)
        if len(q) == 0:
            raise InputShapeError("no query vectors")
        allowed = None if allowed_ids is None else np.unique(_check_ids(allowed_ids))
        shared = threads is not None and not self._want_gpu  # GPU indexes are not thread-safe
        lock = self._lock.read() if shared else self._lock.write()
        settings = _omp_threads(threads) if threads is not None else self._threads_for(len(q))
        with lock, settings:
            if allowed is not None and len(allowed) == 0:
                distances = np.full((len(q), k), np.inf, np.float32)
                labels = np.full((len(q), k), -1, np.int64)
            elif allowed is not None:
                distances, labels = self.index.search(q, k, params=self._params(allowed))
            else:
                self._gpu_copy()
                target = self._gpu.index if self._gpu is not None else self.index
                distances, labels = target.search(q, k)
        if allowed is not None:  # FAISS selectors are exact; make sure of it anyway
            leaked = (labels >= 0) & ~np.isin(labels, allowed)
            labels = np.where(leaked, -1, labels)
        return _result(labels, distances, self.config.metric)

    @contextlib.contextmanager
    def _threads_for(self, n_queries: int) -> Iterator[None]:
        """OpenMP settings for one search call.

        Batches parallelise over queries (FAISS's default). A single query on an IVF
        index parallelises over its inverted lists instead (``parallel_mode = 1``): on
        this project's 2-core machines that beat one thread by 1.4-1.6x from 1,000 to
        16,000 scanned vectors. A single HNSW query runs on one thread; a flat scan
        splits the database between threads.
        """
        ivf = faiss.try_extract_index_ivf(self.index)
        if n_queries > 1 or self.kind.startswith("IndexFlat"):
            yield
            return
        if ivf is None:
            with _omp_threads(1):
                yield
            return
        ivf.parallel_mode = 1
        try:
            yield
        finally:
            ivf.parallel_mode = 0

    def _params(self, allowed: np.ndarray) -> Any:
        selector = faiss.IDSelectorBatch(allowed)
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)  # type: ignore[call-arg]
        hnsw = _hnsw(self.index.index) if isinstance(self.index, faiss.IndexIDMap2) else None
        if hnsw is not None:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=hnsw.efSearch)  # type: ignore[attr-defined]
        return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]

    # ---- tuning -----------------------------------------------------------------------

    def tune_nprobe(self, vectors: np.ndarray, ids: np.ndarray) -> int:
        """The smallest nprobe whose recall@10 on held-in queries reaches the target.

        Queries are stored vectors; each query's own id is left out of both the exact
        and the approximate answer, so that it cannot inflate recall. The target is
        raised by 0.01 to leave a margin for queries that are not in the sample.
        """
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is None:
            return 1
        rng = np.random.default_rng(0)
        pick = rng.choice(len(vectors), size=min(_TUNE_QUERIES, len(vectors)), replace=False)
        queries = vectors[pick]
        exact = _exact_neighbours(queries, vectors, ids, _TUNE_K + 1, self.config.metric)
        target = min(1.0, self.config.recall_target + 0.01)
        candidates = [p for p in _NPROBES if p < ivf.nlist] + [ivf.nlist]
        for nprobe in candidates:
            ivf.nprobe = nprobe
            _, approx = self.index.search(queries, _TUNE_K + 1)
            recall = _recall(approx, exact, ids[pick], _TUNE_K)
            if recall >= target:
                break
        log.info("nprobe %d gives recall@10 %.3f on %d held-in queries", nprobe, recall, len(pick))
        return nprobe

    # ---- GPU and internals ------------------------------------------------------------

    def _gpu_copy(self) -> None:
        """Clone to the GPU on the first unfiltered search after a change (lazy)."""
        if self._want_gpu and self._gpu is None and len(self):
            self._gpu = GpuClone(faiss, self.index, self.config.gpu_fp16)

    def _drop_gpu_copy(self) -> None:
        self._gpu = None

    def _writable(self) -> None:
        if self.mmapped:
            raise ConfigError(
                "this index was memory-mapped read-only; load it without mmap to change it"
            )


# ---- helpers ----------------------------------------------------------------------------


class ReadWriteLock:
    """Many readers (CPU searches) at once, or one writer (changes, GPU searches).

    A waiting writer holds back new readers, so a stream of searches cannot starve an
    index update.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT


def _with_ids(index: Any) -> Any:
    """IVF keeps external ids itself; everything else gets an IndexIDMap2."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        return index
    return faiss.IndexIDMap2(index)


def _hnsw(index: Any) -> Any:
    inner = faiss.downcast_index(index)
    return inner.hnsw if hasattr(inner, "hnsw") else None


def _check_ids(ids: Any) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise InputShapeError(
            f"ids must be a 1-D array of integers, got shape {list(arr.shape)} {arr.dtype}"
        )
    if arr.size and arr.min() < 0:
        raise InputShapeError("ids must be >= 0")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _prepare(vectors: Any, metric: Metric, dim: int | None = None) -> np.ndarray:
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


def _training_sample(x: np.ndarray, limit: int) -> np.ndarray:
    if len(x) <= limit:
        return x
    pick = np.random.default_rng(0).choice(len(x), size=limit, replace=False)
    return x[np.sort(pick)]


def _result(labels: np.ndarray, raw: np.ndarray, metric: Metric) -> SearchResult:
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


def _exact_neighbours(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int, metric: Metric
) -> np.ndarray:
    flat = faiss.IndexIDMap2(faiss.IndexFlat(vectors.shape[1], _faiss_metric(metric)))
    flat.add_with_ids(vectors, ids)
    return flat.search(queries, k)[1]


def _recall(approx: np.ndarray, exact: np.ndarray, self_ids: np.ndarray, k: int) -> float:
    total = 0.0
    for a, e, me in zip(approx, exact, self_ids, strict=True):
        want = [i for i in e if i != me and i >= 0][:k]
        got = {i for i in a if i != me and i >= 0}
        total += len(got.intersection(want)) / max(1, len(want))
    return total / len(approx)


@contextlib.contextmanager
def _omp_threads(n: int | None) -> Iterator[None]:
    """Run a search with ``n`` OpenMP threads (None: leave FAISS's default)."""
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
