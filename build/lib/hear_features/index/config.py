"""Settings of a vector index, and the metric conventions every search result follows."""

from __future__ import annotations

import math
import re
import warnings
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from hear_features.devices import Device, parse_device
from hear_features.errors import ConfigError


class Metric(StrEnum):
    """How similar two vectors are.

    ``cosine`` (the default) normalises vectors and ranks by inner product; ``ip`` ranks
    by raw inner product; ``l2`` by Euclidean distance. Every result reports a
    ``distance`` where smaller is closer: ``1 - cosine``, ``-inner product`` and the
    Euclidean distance respectively, and a ``score`` where larger is closer.
    """

    COSINE = "cosine"
    IP = "ip"
    L2 = "l2"

    @classmethod
    def parse(cls, value: str | None) -> Metric:
        """Accept our names and Feast's (``COSINE``, ``INNER_PRODUCT``, ``L2``, ...)."""
        if value is None:
            return cls.COSINE
        key = value.strip().lower().replace("-", "_")
        aliases = {"inner_product": "ip", "dot": "ip", "dot_product": "ip", "euclidean": "l2"}
        try:
            return cls(aliases.get(key, key))
        except ValueError:
            raise ConfigError(
                f"unknown metric {value!r}; use cosine, ip (inner product) or l2"
            ) from None


class IndexConfig(BaseModel):
    """How an index is built and searched: the ``index:`` section of the online store's
    configuration (``metric`` comes from the feature view's vector field instead).

    ``factory="auto"`` picks exact flat search up to ``flat_threshold`` vectors, an
    ``IVF{nlist},Flat`` index up to ``compress_above``, and above that a compressed
    ``IVF{nlist},RaBitQ`` index (:func:`auto_factory`, :data:`COMPRESSED_CODEC`). nlist is
    about 4*sqrt(N), trained on a sample of at most ``train_sample`` vectors, and never more
    than that sample can train (39 points per list). ``nprobe`` is chosen so that
    recall@10 against exact search on held-in queries reaches ``recall_target``.

    Indexes whose codes are lossy (PQ, RaBitQ, SQ: see :func:`is_lossy`) keep the
    float32 vectors beside them (:mod:`hear_features.index.raw_vectors`) and re-rank the
    best ``rerank * k`` candidates of each search exactly; ``rerank=0`` turns that off.
    Any other ``factory`` is a FAISS factory string used as given (``HNSW32``,
    ``IVF1024,PQ64``...); ``nprobe`` fixes the probe count.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Metric = Metric.COSINE
    factory: str = "auto"
    """``auto`` (flat, IVF above ``flat_threshold``, compressed IVF above
    ``compress_above``) or a FAISS factory string."""
    flat_threshold: int = 20_000
    compress_above: int = 1_000_000
    """Collections larger than this get a compressed index with exact re-ranking."""
    rerank: int = 10
    """Lossy indexes re-rank ``rerank * k`` candidates from the stored vectors (0: off)."""
    recall_target: float = 0.95
    nprobe: int | None = None
    """Fix IVF's nprobe instead of tuning it for ``recall_target``."""
    train_sample: int = 160_000
    hnsw_ef_search: int = 128
    device: Device = "auto"
    """``auto`` (a GPU when faiss sees one), ``cpu`` or ``gpu`` (required)."""
    gpu_fp16: bool = False
    mmap: bool = False
    """Memory-map saved IVF indexes (read-mostly servers)."""

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, value: object) -> Metric:
        return (
            value
            if isinstance(value, Metric)
            else Metric.parse(None if value is None else str(value))
        )

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: object) -> Device:
        return parse_device(str(value), setting="index device")

    @model_validator(mode="after")
    def _check(self) -> IndexConfig:
        if not 0 < self.recall_target <= 1:
            raise ConfigError("recall_target must be in (0, 1]")
        if self.flat_threshold < 0:
            raise ConfigError("flat_threshold must be >= 0")
        if self.compress_above < self.flat_threshold:
            raise ConfigError("compress_above must be >= flat_threshold")
        if self.rerank < 0:
            raise ConfigError("rerank must be >= 0 (0: no exact re-ranking)")
        if self.train_sample < 1:
            raise ConfigError("train_sample must be >= 1")
        if self.nprobe is not None and self.nprobe < 1:
            raise ConfigError("nprobe must be >= 1")
        return self

    def with_metric(self, metric: Metric) -> IndexConfig:
        """The same settings for another metric (a feature view's own)."""
        return self if metric is self.metric else self.model_copy(update={"metric": metric})

    def factory_for(self, n: int, train_points: int | None = None) -> str:
        """The FAISS factory string used for ``n`` vectors, trained on ``train_points`` of
        them (default: ``min(n, train_sample)``); :class:`ConfigError` when an explicit
        factory cannot be trained on them (:func:`check_trainable`), before FAISS starts."""
        if self.factory != "auto":
            points = min(n, self.train_sample) if train_points is None else train_points
            check_trainable(self.factory, points)
            return self.factory
        return auto_factory(
            n,
            train_points=min(n, self.train_sample) if train_points is None else train_points,
            flat_threshold=self.flat_threshold,
            compress_above=self.compress_above,
        )


#: Training points FAISS's k-means wants per centroid (it warns below this).
POINTS_PER_CENTROID = 39
#: The codes of compressed indexes: RaBitQ, one bit per dimension plus a few floats per
#: vector (84 bytes for a 512-d vector and its id, instead of 2,056). Measured at 1M
#: clustered 512-d vectors with 100 re-ranked candidates (BENCHMARKS.md), it kept the
#: recall of IVF-Flat at the same nprobe, where 4-bit PQ fast-scan (45 bytes) lost
#: 5 points and SQ8 (524 bytes) was 2-3x slower to scan. It trains nothing beyond the
#: IVF centroids, so any sample that can train the lists can train it.
COMPRESSED_CODEC = "RaBitQ"


def auto_factory(n: int, *, train_points: int, flat_threshold: int, compress_above: int) -> str:
    """The factory ``auto`` picks; never one that ``train_points`` cannot train.

    Flat up to ``flat_threshold`` vectors; IVF-Flat up to ``compress_above``; then IVF
    with RaBitQ codes. An IVF index needs 39 training points per list; when the sample
    cannot train 16 lists, flat search it is.
    """
    lists = ivf_lists(n, train_points)
    if n <= flat_threshold or lists < 16:
        return "Flat"
    if n <= compress_above:
        return f"IVF{lists},Flat"
    return f"IVF{lists},{COMPRESSED_CODEC}"


def ivf_lists(n: int, train_points: int | None = None) -> int:
    """About 4*sqrt(N) inverted lists, rounded to a multiple of 16, at least 16, and no
    more than ``train_points`` can train (39 points per list; may then be below 16)."""
    lists = max(16, round(4 * math.sqrt(n) / 16) * 16)
    if train_points is not None:
        lists = min(lists, train_points // POINTS_PER_CENTROID)
    return lists


def check_trainable(factory: str, train_points: int) -> None:
    """:class:`ConfigError` unless ``train_points`` vectors can train ``factory``: an
    ``IVF{nlist}`` index needs :data:`POINTS_PER_CENTROID` points per list, a product
    quantiser (``PQ{m}x{bits}``, 8 bits unless given) at least ``2**bits`` points for
    its codebooks. FAISS itself would stop in a C++ exception halfway through a write, or
    train lists on too few points to mean anything."""
    needs: list[tuple[int, str]] = []
    lists = re.search(r"IVF(\d+)", factory)
    if lists:
        nlist = int(lists.group(1))
        needs.append((nlist * POINTS_PER_CENTROID, f"{nlist} inverted lists"))
    pq = re.search(r"(?<!O)PQ(\d+)(?:x(\d+))?", factory)
    if pq:
        bits = int(pq.group(2) or 8)
        needs.append((2**bits, f"{bits}-bit product-quantiser codebooks"))
    for need, what in needs:
        if train_points < need:
            most = train_points // POINTS_PER_CENTROID
            fewer = f", or at most IVF{most}" if most else ""
            raise ConfigError(
                f"index factory {factory!r} cannot be trained on {train_points} vectors: its "
                f"{what} need at least {need}. Use factory: auto (it picks an index the data "
                f"can train) or Flat{fewer}"
            )


def is_lossy(factory: str) -> bool:
    """Whether an index built from ``factory`` stores approximate codes, not the vectors.

    Flat storage (``Flat``, ``IVF...,Flat``, ``HNSW32``, ``HNSW32,Flat``) is exact; every
    quantiser (PQ, SQ, RaBitQ, LSH...) loses precision.
    """
    parts = [p.strip() for p in factory.split(",")]
    storage = parts[-1]
    graph_over_flat = len(parts) == 1 and storage.startswith("HNSW") and "_" not in storage
    return not (storage == "Flat" or graph_over_flat)


#: Index settings once written flat in the online store's section -> their name in its
#: ``index:`` section.
_FLAT_KEYS: Final = {
    "index_factory": "factory",
    "flat_threshold": "flat_threshold",
    "recall_target": "recall_target",
    "nprobe": "nprobe",
    "use_gpu": "device",
    "gpu_fp16": "gpu_fp16",
    "mmap": "mmap",
}


def nest_flat_index_keys(section: dict[str, Any]) -> dict[str, Any]:
    """A configuration section with the flat index keys of earlier versions moved into its
    ``index:`` mapping, each with a warning (the old spellings keep working)."""
    if not _FLAT_KEYS.keys() & section.keys():
        return section
    section = dict(section)
    index = dict(section.get("index") or {})
    for old, new in _FLAT_KEYS.items():
        if old in section:
            warnings.warn(
                f"online_store: {old} is deprecated; write it as index: {{{new}: ...}}",
                FutureWarning,
                stacklevel=4,
            )
            index.setdefault(new, section.pop(old))
    section["index"] = index
    return section
