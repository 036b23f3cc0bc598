"""``VectorIndex``: a thin, explicit wrapper over one FAISS index keyed by int64 ids.

What it adds to FAISS: one id scheme for every index type (IVF keeps external ids
natively, flat and graph indexes are wrapped in ``IndexIDMap2``); the metric conventions
of :class:`~hear_features.index.config.Metric`; upsert and filtered search through ID
selectors, checked once more at the end; the automatic choice of flat, IVF or compressed
IVF and of ``nprobe`` for a recall target; exact re-ranking of compressed (lossy)
indexes from the float32 vectors beside them
(:class:`~hear_features.index.raw_vectors.RawVectors`) and a streamed build whose memory
does not grow with the collection; a lock (GPU indexes are not thread-safe, and writes
must not race searches) and OpenMP settings per call.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from hear_features.index.arrays import (
    SearchResult,
    check_ids,
    faiss_metric,
    prepare,
    rerank,
    search_result,
    training_sample,
)
from hear_features.index.concurrency import ReadWriteLock, omp_threads
from hear_features.index.config import IndexConfig, is_lossy
from hear_features.index.gpu import GpuClone, select_device
from hear_features.index.raw_vectors import RawVectors
from hear_features.index.tuning import (
    TUNE_K,
    RunningTopK,
    held_in_queries,
    sample_pass,
    smallest_nprobe,
)

from hear_features.errors import ConfigError, InputShapeError

log = logging.getLogger(__name__)

#: Queries per search call at or above which FAISS's flat search uses BLAS.
BLAS_THRESHOLD = 4


class VectorIndex:
    """Vectors keyed by int64 ids, searchable by similarity."""

    def __init__(
        self,
        index: Any,
        config: IndexConfig,
        *,
        nprobe: int | None = None,
        mmapped: bool = False,
        raw_vectors: RawVectors | None = None,
    ) -> None:
        """Wrap a FAISS index that already holds its ids (see :meth:`build`).

        ``mmapped``: the index was read memory-mapped, so it is read-only.
        ``raw_vectors``: the float32 vectors of a lossy index, for exact re-ranking.
        """
        self.index = index
        self.config = config
        self.dim = int(index.d)
        self.mmapped = mmapped
        self.raw_vectors = raw_vectors
        self._lock = ReadWriteLock()
        self._gpu: GpuClone | None = None
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and nprobe is not None:
            ivf.nprobe = nprobe
        # Flat search on a handful of queries skips BLAS unless this is lowered (global).
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        # Compressed indexes stay on the CPU: fast-scan codes have no GPU implementation,
        # and re-ranking reads the vectors file anyway.
        self._want_gpu = select_device(config.device, faiss).use_gpu and raw_vectors is None

    # ---- construction ---------------------------------------------------------------

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, config: IndexConfig) -> VectorIndex:
        """Build the index the configuration calls for, train it, add everything, tune it."""
        ids = check_ids(ids)
        x = prepare(vectors, config.metric)
        if len(ids) != len(x):
            raise InputShapeError(f"{len(ids)} ids for {len(x)} vectors")
        factory = config.factory_for(len(x))
        built = cls._untrained(factory, x.shape[1], config)
        if not built.index.is_trained:
            built.index.train(training_sample(x, config.train_sample))
        if len(x):
            built._add(ids, x)
        if built.is_ivf:
            built.set_nprobe(config.nprobe or built._tune(*held_in_queries(x, ids, config.metric)))
        log.info("built %s over %d vectors", factory, len(x))
        return built

    @classmethod
    def build_streamed(
        cls,
        chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
        n: int,
        dim: int,
        config: IndexConfig,
        folder: Path,
    ) -> VectorIndex:
        """Build from a collection too large for memory, read twice in chunks.

        ``chunks()`` must yield the same ``(ids int64 [m], vectors float32 [m, dim])``
        pairs, ``n`` rows in all, each time it is called. The first pass keeps a random
        sample (at most about ``train_sample`` vectors) to train on and a few held-in
        queries; the second adds every chunk to the index, appends it to the float32
        vectors file in ``folder`` (lossy indexes; save the index into the same folder)
        and keeps the queries' exact neighbours for tuning ``nprobe``. Peak memory is
        the sample, one chunk and the index itself, whatever ``n``.
        """
        train, q, q_ids = sample_pass(chunks, n, dim, config)
        factory = config.factory_for(n, train_points=len(train))
        built = cls._untrained(factory, dim, config)
        if built.raw_vectors is not None:
            folder.mkdir(parents=True, exist_ok=True)
            built.raw_vectors.path = folder / f"vectors-{time.time_ns()}.f32"
        if not built.index.is_trained:
            built.index.train(train)
        del train
        exact = RunningTopK(q, TUNE_K + 1, config.metric)
        added = 0
        for ids, vectors in chunks():
            ids = check_ids(ids)
            x = prepare(vectors, config.metric, dim)
            built._add(ids, x)
            if built.raw_vectors is not None:
                assert built.raw_vectors.path is not None
                built.raw_vectors.flush_to(built.raw_vectors.path)
            exact.update(x, ids)
            added += len(x)
            log.info("added %d of %d vectors", added, n)
        if added != n:
            raise InputShapeError(f"chunks() gave {added} vectors the second time, not {n}")
        if built.is_ivf and len(q):
            built.set_nprobe(config.nprobe or built._tune(q, q_ids, exact.ids))
        log.info("built %s over %d vectors, streamed", factory, n)
        return built

    @classmethod
    def _untrained(cls, factory: str, dim: int, config: IndexConfig) -> VectorIndex:
        """An empty index for ``factory``, with raw vectors when its codes are lossy."""
        try:
            raw = faiss.index_factory(dim, factory, faiss_metric(config.metric))
        except RuntimeError as exc:
            raise ConfigError(f"FAISS cannot build index {factory!r}: {exc}") from exc
        hnsw = _hnsw(raw)
        if hnsw is not None:
            hnsw.efSearch = config.hnsw_ef_search
        lossy = is_lossy(factory) and config.rerank > 0
        return cls(_with_ids(raw), config, raw_vectors=RawVectors(dim) if lossy else None)

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
    def is_ivf(self) -> bool:
        """An inverted-file index: approximate, trained for the data it was built on."""
        return faiss.try_extract_index_ivf(self.index) is not None

    @property
    def nprobe(self) -> int | None:
        ivf = faiss.try_extract_index_ivf(self.index)
        return int(ivf.nprobe) if ivf is not None else None

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

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the vectors of existing ids and add the others."""
        ids = check_ids(ids)
        x = prepare(vectors, self.config.metric, self.dim)
        with self._lock.write():
            self._writable()
            self._remove(ids)
            self._add(ids, x)
            self._drop_gpu_copy()

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many went. A compressed
        index drops them from its id mapping too; their rows leave the vectors file at
        the next ``save(..., keep_previous=False)``."""
        with self._lock.write():
            self._writable()
            removed = self._remove(check_ids(ids))
            self._drop_gpu_copy()
            return removed

    def _add(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_with_ids(x, ids)
        if self.raw_vectors is not None:
            self.raw_vectors.append(ids, x)

    def _remove(self, ids: np.ndarray) -> int:
        if self.raw_vectors is not None:  # it knows which ids exist: skip the others
            ids = ids[self.raw_vectors.rows_of(ids) >= 0]
            self.raw_vectors.forget(ids)
        if len(ids) == 0 or len(self) == 0:
            return 0
        ivf = faiss.try_extract_index_ivf(self.index)
        # A hashtable direct map removes exactly the listed ids; without one FAISS asks the
        # selector about every stored id, so it must answer in O(1) (IDSelectorBatch).
        hashed = ivf is None or ivf.direct_map.type != faiss.DirectMap.NoMap  # type: ignore[attr-defined]
        selector = faiss.IDSelectorArray(ids) if hashed else faiss.IDSelectorBatch(ids)
        try:
            return int(self.index.remove_ids(selector))
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

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        threads: int | None = None,
    ) -> SearchResult:
        """The ``k`` nearest stored vectors of each query, optionally among ``allowed_ids``.

        ``threads=None``: one OpenMP thread for a single query, every core for a batch
        (and the call runs alone). A server that searches from several threads at once
        passes ``threads=1``: its CPU searches then run side by side, one core each,
        without OpenMP threads competing for the same cores.
        """
        if k < 1:
            raise InputShapeError(f"k must be at least 1, got {k}")
        q = prepare(queries, self.config.metric, self.dim)
        if len(q) == 0:
            raise InputShapeError("no query vectors")
        allowed = None if allowed_ids is None else np.unique(check_ids(allowed_ids))
        shared = threads is not None and not self._want_gpu  # GPU indexes are not thread-safe
        lock = self._lock.read() if shared else self._lock.write()
        settings = omp_threads(threads) if threads is not None else self._threads_for(len(q))
        with lock, settings:
            distances, labels = self._search(q, k, allowed)
        if allowed is not None:  # FAISS selectors are exact; make sure of it anyway
            leaked = (labels >= 0) & ~np.isin(labels, allowed)
            labels = np.where(leaked, -1, labels)
        return search_result(labels, distances, self.config.metric)

    def _search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's raw (distances, labels) for prepared queries; re-ranked when lossy."""
        fetch = k if self.raw_vectors is None else k * self.config.rerank
        if allowed is not None and len(allowed) == 0:
            return np.full((len(q), k), np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if allowed is not None:
            distances, labels = self.index.search(q, fetch, params=self._params(allowed))
        else:
            self._gpu_copy()
            target = self._gpu.index if self._gpu is not None else self.index
            distances, labels = target.search(q, fetch)
        if self.raw_vectors is None:
            return distances, labels
        return rerank(q, labels, self.raw_vectors, k, self.config.metric)

    @contextlib.contextmanager
    def _threads_for(self, n_queries: int) -> Iterator[None]:
        """OpenMP settings for one search call: one thread for a single query, FAISS's
        default (every core, in parallel over the queries) for a batch.

        Two threads on one query (over its inverted lists, or halves of a flat scan)
        were 1.2-1.4x faster on an idle 2-core machine, but 5-30x slower at the 99th
        percentile once other processes kept the cores busy: the query waits for the
        slower thread, and a thread waiting for a core waits a whole time slice
        (BENCHMARKS.md, "Search under load").
        """
        if n_queries > 1:
            yield
            return
        with omp_threads(1):
            yield

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

    def _tune(self, queries: np.ndarray, query_ids: np.ndarray, exact: np.ndarray) -> int:
        """The smallest nprobe whose recall@10 on held-in queries (stored vectors, each
        left out of its own answers so it cannot inflate recall) reaches the target plus
        0.01, a margin for queries not in the sample; searches re-rank as usual."""
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is None:
            return 1
        target = min(1.0, self.config.recall_target + 0.01)
        return smallest_nprobe(ivf, self._search, queries, query_ids, exact, target)

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


def _with_ids(index: Any) -> Any:
    """IVF keeps external ids itself; everything else gets an IndexIDMap2.

    IVF indexes get a hashtable from id to list position (for ``reconstruct`` and fast
    removal), except fast-scan ones, which cannot remove through one: their vectors are
    reconstructed from the raw vectors file instead.
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        if not isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFastScan):
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        return index
    return faiss.IndexIDMap2(index)


def _hnsw(index: Any) -> Any:
    inner = faiss.downcast_index(index)
    return inner.hnsw if hasattr(inner, "hnsw") else None
