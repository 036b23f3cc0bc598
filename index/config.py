"""Settings of a vector index, and the metric conventions every search result follows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

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


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built and searched.

    ``factory="auto"`` picks exact flat search up to ``flat_threshold`` vectors and an
    ``IVF{nlist},Flat`` index above it, with nlist about 4*sqrt(N) trained on a sample,
    and ``nprobe`` chosen so that recall@10 against exact search on held-in queries
    reaches ``recall_target``. Any other value is a FAISS factory string used as given
    (``HNSW32``, ``IVF1024,PQ64``...); ``nprobe`` fixes the probe count.
    """

    metric: Metric = Metric.COSINE
    factory: str = "auto"
    flat_threshold: int = 20_000
    recall_target: float = 0.95
    nprobe: int | None = None
    train_sample: int = 160_000
    hnsw_ef_search: int = 128
    use_gpu: str = "auto"
    gpu_fp16: bool = False
    mmap: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.recall_target <= 1:
            raise ConfigError("recall_target must be in (0, 1]")
        if self.flat_threshold < 0:
            raise ConfigError("flat_threshold must be >= 0")
        if self.use_gpu not in ("auto", "never", "always"):
            raise ConfigError(f"use_gpu must be auto, never or always, not {self.use_gpu!r}")
        if self.nprobe is not None and self.nprobe < 1:
            raise ConfigError("nprobe must be >= 1")

    def factory_for(self, n: int) -> str:
        """The FAISS factory string used for a collection of ``n`` vectors."""
        if self.factory != "auto":
            return self.factory
        if n <= self.flat_threshold:
            return "Flat"
        return f"IVF{ivf_lists(n)},Flat"


def ivf_lists(n: int) -> int:
    """About 4*sqrt(N) inverted lists, rounded to a multiple of 16, at least 16."""
    return max(16, round(4 * math.sqrt(n) / 16) * 16)
