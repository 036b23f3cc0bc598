"""A 2-D map of every stored embedding, computed once per state of the store.

Two projections, both of unit-length vectors (the store searches by cosine, and on the
unit sphere Euclidean distance orders neighbours exactly as cosine does):

* ``pca``: the first two principal components (scikit-learn). Seconds for 100k vectors,
  so it is computed when first asked for; a faithful first view of the largest
  variations, but clusters overlap.
* ``umap``: UMAP (umap-learn, ``n_neighbors=15, min_dist=0.1``) on the first 50
  principal components, the usual way to keep UMAP's neighbour search affordable. It
  keeps local neighbourhoods, so similar sounds form visible islands; minutes for 100k
  vectors on two cores, so it runs in the background and callers are told to come back.

Coordinates are scaled to [0, 1] on both axes. A map belongs to one *generation* of the
view (:meth:`HearOnlineStore.generation`, which changes with every write): it is saved as
``map-<method>-<generation>.npz`` (numpy arrays only, nothing pickled) in the view's
derived folder and kept in memory, and a write to the store makes it stale. Computations
of one map are serialised across processes by a file lock, so two server workers never
compute the same map twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from hear_features.atomic import atomic_path
from hear_features.errors import MapComputationFailed, MapError
from hear_features.featurestore.online.scan import VectorSnapshot
from hear_features.locking import LockTimeout, file_lock

log = logging.getLogger(__name__)

#: UMAP needs a neighbourhood: below this many points only PCA is offered.
UMAP_MIN_POINTS = 10
UMAP_NEIGHBOURS = 15
UMAP_PCA_DIMS = 50


class MapMethod(StrEnum):
    pca = "pca"
    """Principal components 1 and 2 (computed on request, seconds)."""
    umap = "umap"
    """UMAP of the first 50 principal components (computed in the background, minutes)."""


class MapStatus(StrEnum):
    ready = "ready"
    computing = "computing"
    missing = "missing"
    failed = "failed"


@dataclass(frozen=True)
class EmbeddingMap:
    """2-D coordinates of every stored vector of one generation."""

    method: MapMethod
    generation: int
    ids: np.ndarray  # (n,) int64 row ids, ascending
    entity_ids: np.ndarray  # (n,) str: clip ids
    xy: np.ndarray  # (n, 2) float32 in [0, 1]
    seconds: float  # how long the projection took

    def __len__(self) -> int:
        return len(self.ids)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), float32."""
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def project(vectors: np.ndarray, method: MapMethod, *, seed: int = 0) -> np.ndarray:
    """``(n, d)`` vectors -> ``(n, 2)`` float32 coordinates in [0, 1] (see module doc).

    Raises :class:`MapError` for UMAP on fewer than ``UMAP_MIN_POINTS`` vectors.
    """
    x = unit_rows(vectors)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if method is MapMethod.umap:
        if n < UMAP_MIN_POINTS:
            raise MapError(
                f"a UMAP map needs at least {UMAP_MIN_POINTS} stored clips, the store has {n}; "
                "use method=pca"
            )
        import umap  # imported on first use: numba compiles for several seconds

        reduced = _pca(x, min(UMAP_PCA_DIMS, n - 1, x.shape[1]), seed)
        xy = umap.UMAP(
            n_neighbors=min(UMAP_NEIGHBOURS, n - 1),
            min_dist=0.1,
            n_components=2,
            init="spectral" if n > 2 * UMAP_NEIGHBOURS else "random",
            random_state=seed,
            n_jobs=1,
        ).fit_transform(reduced)
    else:
        xy = _pca(x, min(2, n, x.shape[1]), seed)
    return _unit_square(np.asarray(xy, dtype=np.float64))


def _pca(x: np.ndarray, components: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    if components < 1 or len(x) < 2:
        return np.zeros((len(x), max(components, 2)), np.float32)
    out = PCA(n_components=components, svd_solver="auto", random_state=seed).fit_transform(x)
    if out.shape[1] < 2:
        out = np.hstack([out, np.zeros((len(out), 2 - out.shape[1]), out.dtype)])
    return np.asarray(out, np.float32)


def _unit_square(xy: np.ndarray) -> np.ndarray:
    """Scale each axis to [0, 1]; an axis without spread sits at 0.5."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = hi - lo
    out = np.where(span > 0, (xy - lo) / np.where(span > 0, span, 1.0), 0.5)
    return out.astype(np.float32)


def compute_map(snapshot: VectorSnapshot, method: MapMethod, *, seed: int = 0) -> EmbeddingMap:
    started = time.perf_counter()
    xy = project(snapshot.vectors, method, seed=seed)
    return EmbeddingMap(
        method=method,
        generation=snapshot.generation,
        ids=np.asarray(snapshot.ids, np.int64),
        entity_ids=np.asarray(snapshot.entity_ids, dtype=str),
        xy=xy,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class AlignedColumn:
    """A metadata column lined up with a map's points: text as ``categories`` + ``codes``
    (-1: no value), numbers as ``values`` (NaN: no value)."""

    categories: list[str] | None
    codes: np.ndarray | None  # (n,) int32
    values: np.ndarray | None  # (n,) float64


def align_column(
    map_ids: np.ndarray, column_ids: np.ndarray, values: list[str | float | None]
) -> AlignedColumn:
    """Put ``values`` (of rows ``column_ids``) in the order of ``map_ids`` (ascending).

    A column holding any text is a text column (numbers in it become text)."""
    n = len(map_ids)
    pos = np.searchsorted(map_ids, column_ids)
    inside = pos < n
    hit = np.zeros(len(column_ids), bool)
    hit[inside] = map_ids[pos[inside]] == column_ids[inside]
    rows = pos[hit]
    kept = [v for v, h in zip(values, hit, strict=True) if h]
    if any(isinstance(v, str) for v in kept):
        text = ["" if v is None else (v if isinstance(v, str) else f"{v:g}") for v in kept]
        categories, inverse = np.unique(np.asarray(text, dtype=str), return_inverse=True)
        codes = np.full(n, -1, np.int32)
        codes[rows] = inverse.astype(np.int32)
        return AlignedColumn([str(c) for c in categories], codes, None)
    numbers = np.full(n, np.nan)
    numbers[rows] = np.asarray([np.nan if v is None else float(v) for v in kept], np.float64)
    return AlignedColumn(None, None, numbers)


def save_map(embedding_map: EmbeddingMap, path: Path) -> None:
    """Write the map atomically as an ``.npz`` of plain arrays."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(
            f,
            method=np.asarray(str(embedding_map.method)),
            generation=np.asarray(embedding_map.generation, np.int64),
            ids=embedding_map.ids,
            entity_ids=embedding_map.entity_ids,
            xy=embedding_map.xy,
            seconds=np.asarray(embedding_map.seconds, np.float64),
        )


def load_map(path: Path) -> EmbeddingMap:
    with np.load(path, allow_pickle=False) as data:
        return EmbeddingMap(
            method=MapMethod(str(data["method"])),
            generation=int(data["generation"]),
            ids=data["ids"],
            entity_ids=data["entity_ids"],
            xy=data["xy"],
            seconds=float(data["seconds"]),
        )


class MapStore:
    """The maps of one vector view: memory, then disk, then computed.

    ``snapshot`` reads every stored vector (one generation); ``generation`` says which
    generation is current (cheap). PCA maps are computed by the caller's thread
    (:meth:`get_or_compute`); UMAP maps by a background thread (:meth:`start`).
    """

    def __init__(
        self,
        folder: Path,
        snapshot: Callable[[], VectorSnapshot],
        generation: Callable[[], int],
        *,
        lock_timeout_s: float = 600.0,
    ) -> None:
        self.folder = folder
        self._snapshot = snapshot
        self._generation = generation
        self._lock_timeout_s = lock_timeout_s
        self._memory: dict[MapMethod, EmbeddingMap] = {}
        self._running: dict[MapMethod, threading.Thread] = {}
        self._failed: dict[MapMethod, tuple[int, str]] = {}  # generation, message
        self._lock = threading.Lock()

    def path(self, method: MapMethod, generation: int) -> Path:
        return self.folder / f"map-{method}-{generation:012d}.npz"

    def generation(self) -> int:
        return self._generation()

    def cached(self, method: MapMethod, generation: int | None = None) -> EmbeddingMap | None:
        """The map of the current generation if memory or disk has it."""
        generation = self._generation() if generation is None else generation
        with self._lock:
            held = self._memory.get(method)
        if held is not None and held.generation == generation:
            return held
        path = self.path(method, generation)
        if not path.exists():
            return None
        try:
            loaded = load_map(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable map cache %s: %s", path, exc)
            return None
        with self._lock:
            self._memory[method] = loaded
        return loaded

    def status(self, method: MapMethod) -> MapStatus:
        generation = self._generation()
        if self.cached(method, generation) is not None:
            return MapStatus.ready
        with self._lock:
            if method in self._running:
                return MapStatus.computing
            if self._failed.get(method, (-1, ""))[0] == generation:
                return MapStatus.failed
        return MapStatus.missing

    def failure(self, method: MapMethod) -> str | None:
        """Why the map of the current generation could not be computed (None: it did not fail)."""
        generation = self._generation()
        with self._lock:
            failed = self._failed.get(method)
        return failed[1] if failed is not None and failed[0] == generation else None

    def get_or_compute(self, method: MapMethod) -> EmbeddingMap:
        """The current map, computed now (in this thread) when nobody has it yet."""
        return self.cached(method) or self._compute(method, wait_s=self._lock_timeout_s)

    def start(self, method: MapMethod) -> MapStatus:
        """Compute the current map in a background thread unless it exists, is under
        way, or failed for this generation; returns the status after the call."""
        status = self.status(method)
        if status in (MapStatus.ready, MapStatus.failed):
            return status
        with self._lock:
            if method not in self._running:
                thread = threading.Thread(
                    target=self._background, args=(method,), name=f"map-{method}", daemon=True
                )
                self._running[method] = thread
                thread.start()
        return MapStatus.computing

    def _background(self, method: MapMethod) -> None:
        generation = self._generation()
        try:
            self._compute(method, wait_s=self._lock_timeout_s)
        except Exception as exc:  # reported through status(), logged with its traceback
            log.exception("computing the %s map failed", method)
            with self._lock:
                self._failed[method] = (generation, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.pop(method, None)

    def _compute(self, method: MapMethod, *, wait_s: float) -> EmbeddingMap:
        target = self.folder / f"map-{method}.npz"
        try:
            with file_lock(target, timeout_s=wait_s, what=f"the {method} map"):
                done = self.cached(method)  # another process may have made it meanwhile
                if done is not None:
                    return done
                snapshot = self._snapshot()
                log.info(
                    "computing the %s map of %d vectors (generation %d)",
                    method,
                    len(snapshot.ids),
                    snapshot.generation,
                )
                result = compute_map(snapshot, method)
                save_map(result, self.path(method, result.generation))
                self._prune(method, keep=result.generation)
        except LockTimeout as exc:
            raise MapComputationFailed(str(exc)) from exc
        log.info("%s map of %d vectors took %.1f s", method, len(result), result.seconds)
        with self._lock:
            self._memory[method] = result
        return result

    def _prune(self, method: MapMethod, keep: int) -> None:
        for old in self.folder.glob(f"map-{method}-*.npz"):
            if old != self.path(method, keep):
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
