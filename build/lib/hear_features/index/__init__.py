"""The FAISS vector index: build, persist, load, search (with filters), GPU or CPU.

Imported as ``hear_features.index`` (the folder is mapped into the package by
``pyproject.toml``).
"""

from __future__ import annotations

from hear_features.index.config import IndexConfig, Metric, ivf_lists
from hear_features.index.persist import IndexLoadError, Manifest, load, read_manifest, save
from hear_features.index.vector_index import SearchResult, VectorIndex

__all__ = [
    "IndexConfig",
    "IndexLoadError",
    "Manifest",
    "Metric",
    "SearchResult",
    "VectorIndex",
    "ivf_lists",
    "load",
    "read_manifest",
    "save",
]
