"""``VectorIndex`` with the operations only tests need: add, reconstruct, and
whether the last search ran on a GPU.

The product keeps an index in step with its table through ``upsert`` alone; these
helpers let tests check the FAISS bookkeeping underneath (ids removed, vectors stored
as normalised, the device actually used).
"""

from __future__ import annotations

import numpy as np
from hear_features.index import vector_index
from hear_features.index.arrays import check_ids, prepare


class VectorIndex(vector_index.VectorIndex):
    """The product's index, plus inspection and direct edits for tests."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under new ids (the product upserts)."""
        ids = check_ids(ids)
        x = prepare(vectors, self.config.metric, self.dim)
        with self._lock.write():
            self._writable()
            self._add(ids, x)
            self._drop_gpu_copy()

    def reconstruct(self, id_: int) -> np.ndarray:
        """The stored vector of ``id_`` (unit length for cosine indexes); for a compressed
        index, its exact float32 vector from the vectors file."""
        with self._lock.read():
            if self.raw_vectors is not None:
                row = self.raw_vectors.rows_of(np.array([id_], np.int64))
                if row[0] < 0:
                    raise KeyError(id_)
                return self.raw_vectors.get(row)[0]
            try:
                return np.asarray(self.index.reconstruct(int(id_)), dtype=np.float32)
            except RuntimeError as exc:
                raise KeyError(id_) from exc

    @property
    def on_gpu(self) -> bool:
        """Whether unfiltered searches run on a GPU copy."""
        return self._gpu is not None
