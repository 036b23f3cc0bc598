"""hear-features: a Feast feature store and FAISS similarity search for HeAR embeddings."""

from __future__ import annotations

__version__ = "0.1.0"
