"""Synthetic vector collections for the index tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def clustered_vectors(
    n: int,
    dim: int = 512,
    *,
    clusters: int = 200,
    latent: int = 32,
    spread: float = 1.0,
    noise: float = 0.05,
    seed: int = 0,
) -> np.ndarray:
    """``n`` float32 vectors shaped like an embedding collection.

    Points are drawn around ``clusters`` centres in a ``latent``-dimensional space,
    projected to ``dim`` dimensions, plus a little isotropic noise. Real embeddings sit
    on such a low-dimensional, clustered manifold, which is what IVF indexes exploit;
    isotropic Gaussian blobs in 512-d would be either trivially separable or pure noise.
    Generated in chunks so that a million vectors fit comfortably in memory.
    """
    out = np.empty((n, dim), dtype=np.float32)
    start = 0
    for chunk in clustered_vector_chunks(
        n, dim, clusters=clusters, latent=latent, spread=spread, noise=noise, seed=seed
    ):
        out[start : start + len(chunk)] = chunk
        start += len(chunk)
    return out


def clustered_vector_chunks(
    n: int,
    dim: int = 512,
    *,
    chunk: int = 100_000,
    clusters: int = 200,
    latent: int = 32,
    spread: float = 1.0,
    noise: float = 0.05,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """:func:`clustered_vectors` as float32 [<= chunk, dim] pieces, for collections larger
    than memory: the same ``seed`` gives the same vectors (for ``chunk=100_000``, the very
    same as :func:`clustered_vectors`); each call of this generator starts over."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32)
    projection = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    for start in range(0, n, chunk):
        size = min(n, start + chunk) - start
        members = rng.integers(0, clusters, size=size)
        z = centres[members] + spread * rng.standard_normal((size, latent)).astype(np.float32)
        yield z @ projection + noise * rng.standard_normal((size, dim)).astype(np.float32)
