"""The full-precision vectors behind a compressed index, for exact re-ranking.

A compressed index (IVF with 4-bit PQ fast-scan codes, about 2% of the raw float32
size) finds candidates; their exact scores come from the stored float32 vectors. Those
live here, in a memory-mapped float32 file beside the index, not in the process:

* the OS page cache decides which rows stay resident, so the process's own memory is
  the compressed index, and a search touches only its candidates' rows (``rerank``
  of them, 2 KiB each at 512-d);
* rows are written once and never changed (append-only), so a reader can keep the file
  mapped while a writer appends past the end it knows, and every saved generation of
  the index names the number of rows that belong to it;
* the index package stays independent of the online store (data flows store -> index).

Rows added since the last save are held in memory (:attr:`RawVectors.pending`) until
:func:`hear_features.index.persist.save` appends them to the file; readers that catch up
in memory therefore never write to a shared file.

Ids map to rows through two sorted int64 arrays (16 bytes per vector); the same id
written again gets a new row, and the mapping points at the newest.

Deleting data is the one exception to append-only: :meth:`RawVectors.compact_to` writes
the live rows into a new file (atomically), which replaces the old one for every later
generation; readers that still map the old file drop the removed ids from their mapping
when they catch up, so they never serve them, and the old file's bytes are gone from the
folder once it is unlinked.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

import numpy as np

from hear_features.atomic import atomic_path
from hear_features.errors import InputShapeError

#: Rows copied per block by :meth:`RawVectors.compact_to` (8 MiB at 512-d).
_COPY_ROWS = 4096


class RawVectors:
    """float32 [rows, dim] in a file (plus rows not saved yet), looked up by int64 id."""

    def __init__(
        self,
        dim: int,
        path: Path | None = None,
        rows: int = 0,
        mapping: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.dim = dim
        self.path = path
        self._file: np.ndarray = (
            _map(path, rows, dim) if path is not None and rows else np.zeros((0, dim), np.float32)
        )
        self.pending: list[np.ndarray] = []  # rows after the file's, not on disk yet
        self._pending_rows = 0
        empty = np.zeros(0, np.int64)
        self.sorted_ids: np.ndarray
        self.sorted_rows: np.ndarray
        self.sorted_ids, self.sorted_rows = mapping if mapping is not None else (empty, empty)

    # ---- facts --------------------------------------------------------------------------

    @property
    def file_rows(self) -> int:
        return int(self._file.shape[0])

    @property
    def rows(self) -> int:
        """Rows written, on disk or pending (live or superseded)."""
        return self.file_rows + self._pending_rows

    def __len__(self) -> int:
        """Ids that have a row."""
        return len(self.sorted_ids)

    # ---- writes -------------------------------------------------------------------------

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Give ``ids`` (unique int64) new rows holding ``vectors`` (float32 [n, dim])."""
        if len(ids) != len(vectors) or vectors.shape[1:] != (self.dim,):
            raise InputShapeError(f"{len(ids)} ids for vectors of shape {list(vectors.shape)}")
        if len(ids) == 0:
            return
        rows = np.arange(self.rows, self.rows + len(ids), dtype=np.int64)
        self.pending.append(np.ascontiguousarray(vectors, dtype=np.float32))
        self._pending_rows += len(ids)
        self._map(ids, rows)

    def forget(self, ids: np.ndarray) -> None:
        """Drop the mapping of ``ids`` (their rows stay in the file, unused)."""
        keep = ~np.isin(self.sorted_ids, ids)
        self.sorted_ids, self.sorted_rows = self.sorted_ids[keep], self.sorted_rows[keep]

    def _map(self, ids: np.ndarray, rows: np.ndarray) -> None:
        self.forget(ids)
        order = np.argsort(ids, kind="stable")
        ids, rows = ids[order], rows[order]
        at = np.searchsorted(self.sorted_ids, ids)
        self.sorted_ids = np.insert(self.sorted_ids, at, ids)
        self.sorted_rows = np.insert(self.sorted_rows, at, rows)

    def flush_to(self, path: Path) -> int:
        """Append the pending rows to ``path`` (the file this object reads, or a new one),
        fsync, and map the whole file; returns the number of rows it now holds.

        Rows already in the file are never rewritten, so readers of older generations
        are safe. When the file holds more rows than this object knew (another writer
        appended, or a crashed one left a partial row), the pending rows go after them.
        """
        if self.path is not None and path != self.path:
            raise ValueError(f"these vectors live in {self.path}, not {path}")
        row_bytes = self.dim * 4
        with open(path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            size = f.seek(0, os.SEEK_END)
            start = -(-size // row_bytes)  # whole rows already there, a partial one included
            if start * row_bytes != size:
                f.write(b"\0" * (start * row_bytes - size))
            shift = start - self.file_rows
            if shift > 0:  # rows of others: move ours after them
                moved = self.sorted_rows >= self.file_rows
                self.sorted_rows = np.where(moved, self.sorted_rows + shift, self.sorted_rows)
            for block in self.pending:
                f.write(block.tobytes())
            f.flush()
            os.fsync(f.fileno())
            total = start + self._pending_rows
        self.path = path
        self._file = _map(path, total, self.dim)
        self.pending, self._pending_rows = [], 0
        return total

    def compact_to(self, path: Path) -> int:
        """Write only the rows some id maps to (in id order) into the new file ``path``,
        atomically, and read from it from now on; returns its rows.

        Rows no id maps to (superseded or removed vectors) are left behind with the old
        file, which the caller deletes (:func:`hear_features.index.persist.save`).
        """
        if path.exists():
            raise ValueError(f"{path} exists; compacting never writes over a vectors file")
        rows = self.sorted_rows
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            for start in range(0, len(rows), _COPY_ROWS):
                f.write(self.get(rows[start : start + _COPY_ROWS]).tobytes())
        total = len(rows)
        self.path = path
        self._file = _map(path, total, self.dim)
        self.pending, self._pending_rows = [], 0
        self.sorted_rows = np.arange(total, dtype=np.int64)
        return total

    # ---- reads --------------------------------------------------------------------------

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The row of each id (int64), -1 where an id has none."""
        ids = np.asarray(ids, np.int64)
        if not len(self.sorted_ids):
            return np.full(len(ids), -1, np.int64)
        at = np.minimum(np.searchsorted(self.sorted_ids, ids), len(self.sorted_ids) - 1)
        return np.where(self.sorted_ids[at] == ids, self.sorted_rows[at], -1)

    def get(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), dim] for rows (all >= 0), from the file or memory."""
        out = np.empty((len(rows), self.dim), np.float32)
        on_file = rows < self.file_rows
        if on_file.any():
            picked = rows[on_file]
            order = np.argsort(picked)  # ascending offsets: friendlier to the page cache
            block = np.empty((len(picked), self.dim), np.float32)
            block[order] = self._file[picked[order]]
            out[on_file] = block
        if (~on_file).any():
            memory = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
            self.pending = [memory]
            out[~on_file] = memory[rows[~on_file] - self.file_rows]
        return out


def _map(path: Path, rows: int, dim: int) -> np.ndarray:
    """``rows`` x ``dim`` float32 of ``path``, mapped read-only for random access.

    Re-ranking reads scattered 2 KiB rows; the kernel's default read-ahead would page in
    128 KiB around each, filling memory with rows nobody asked for (measured: 3.9 GiB
    resident after 200 queries at 5M), so read-ahead is turned off (``MADV_RANDOM``).
    """
    if rows == 0:  # an empty file cannot be mapped
        return np.zeros((0, dim), np.float32)
    array = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, dim))
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(mmap, "MADV_RANDOM"):
        handle.madvise(mmap.MADV_RANDOM)
    return array
