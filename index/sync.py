"""Keeping an index in step with the table its vectors come from.

The table is the source of truth; the FAISS index is a cache of its vectors that can
always be rebuilt. The table numbers its write batches (``seq``) and tells which rows
each changed and which ids were removed (a :class:`ChangeFeed`). Each saved index
records the last ``seq`` it contains, so a process that loads it (or holds it in memory
while another process writes or deletes) catches up by applying only the changes since.
After a deletion, :meth:`IndexSync.compact` saves the index as the only generation, so
no file of the folder keeps a removed vector.

The policy lives here too: an index is saved once enough changes have piled up (and
when a writer asks, :meth:`IndexSync.checkpoint`), and with ``factory: auto`` a flat
index that outgrew ``flat_threshold``, or an IVF index grown 4x past the size it was
trained for, is rebuilt (retrained) from the table. A rebuild reads the table as of one
moment (:meth:`ChangeFeed.frozen`) in chunks: above ``compress_above`` vectors it never
holds them all in memory (:meth:`VectorIndex.build_streamed`), below it gathers them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from hear_features.index.config import IndexConfig
from hear_features.index.persist import clear, load, save
from hear_features.index.vector_index import SearchResult, VectorIndex

from hear_features.errors import IndexLoadError, InputShapeError

log = logging.getLogger(__name__)

#: Unsaved changes (and at least this share of the index, in 1/n) that trigger a save.
_SAVE_AFTER = 1_000
_SAVE_FRACTION = 20
#: An IVF index is retrained once it holds this many times the vectors it was trained on.
_REGROW = 4
#: Rows per read while rebuilding from the table (50,000 x 512 float32: 100 MB).
REBUILD_CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class FrozenVectors:
    """A table's vectors as of one moment: ``rows`` vectors of length ``dim``, current as
    of ``seq``; ``chunks()`` yields them as (ids int64 [m], vectors float32 [m, dim]) in id
    order, the same each time it is called."""

    rows: int
    dim: int
    seq: int
    chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


class ChangeFeed(Protocol):
    """The vectors of one table, numbered by write batch (``seq``)."""

    def latest_seq(self) -> int:
        """The highest ``seq`` written so far (0 for an empty or missing table)."""
        ...

    def changed_since(self, seq: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids int64 [n], vectors float32 [n, d], the latest seq of the same snapshot)
        of the rows with a vector changed after ``seq``."""
        ...

    def removed_since(self, seq: int) -> np.ndarray:
        """The ids (int64) removed after ``seq``; ids are never reused. Read after
        :meth:`changed_since`, so no removal committed in between is missed."""
        ...

    def frozen(self, chunk_rows: int) -> AbstractContextManager[FrozenVectors]:
        """Every (id, vector) of the table as of now, readable in chunks of at most
        ``chunk_rows`` any number of times until the context exits, whatever writers do
        meanwhile."""
        ...

    def model_id(self) -> str:
        """The model that made the vectors (``unknown`` when the table does not say)."""
        ...


class IndexSync:
    """One table's index in this process: load, catch up, search, save, regrow."""

    def __init__(
        self,
        feed: ChangeFeed,
        folder: Path,
        config: IndexConfig,
        name: str,
        *,
        chunk_rows: int = REBUILD_CHUNK_ROWS,
        source: str = "",
    ) -> None:
        """``source`` names the feed's data as a whole (the online database's id): a saved
        index recorded for another source (the database was removed and made again, its
        ids and ``seq`` numbers starting over) is rebuilt, not caught up."""
        self.feed = feed
        self.chunk_rows = chunk_rows
        self.source = source
        self.folder = folder
        self.config = config
        self.name = name
        self.index: VectorIndex | None = None
        self.applied_seq = 0
        self.saved_seq = 0
        self.built_size = 0  # vectors the index was built (trained) for
        self.model_id = "unknown"
        self._lock = threading.RLock()

    # ---- keeping current --------------------------------------------------------------

    def current(self) -> VectorIndex | None:
        """The index with every committed change applied (None when there are no vectors).

        Costs one indexed ``MAX(seq)`` query when nothing changed.
        """
        with self._lock:
            if self.index is None:
                self._open()
            elif self.feed.latest_seq() > self.applied_seq:
                self._catch_up()
            return self.index

    def behind(self) -> bool:
        """Whether :meth:`current` would first load the index or apply committed changes
        (one indexed ``MAX(seq)`` query; a hint, read without the lock)."""
        return self.index is None or self.feed.latest_seq() > self.applied_seq

    def stored_dim(self) -> int | None:
        """The length of the stored vectors (None while there are none)."""
        index = self.current()
        return None if index is None else index.dim

    def apply(self, seq: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        """A write batch of this process: apply it in memory, save when it is worth it.

        A batch that stored nothing (every row older than what was stored) left no
        ``seq`` in the table, so the next batch gets the same number: it is skipped here.
        """
        if not len(ids):
            return
        with self._lock:
            if self.index is None or seq != self.applied_seq + 1:
                self.current()  # first use, or another process wrote in between
            else:
                self.index.upsert(ids, vectors)
                self.applied_seq = seq
                self._maybe_regrow()
            if self.index is not None and self._unsaved() >= max(
                _SAVE_AFTER, len(self.index) // _SAVE_FRACTION
            ):
                self._save()

    def compact(self) -> None:
        """After a deletion: apply it, and save the index as the folder's only
        generation (its vectors file rewritten without the removed rows), so that no
        index file keeps a removed vector; with no vector left, delete the saved files."""
        with self._lock:
            if self.current() is None:  # no vector left: no file may keep one
                clear(self.folder)
                return
            self._write(keep_previous=False)

    def checkpoint(self) -> None:
        """Bring the index up to date and save it if it holds changes not on disk yet
        (a writer calls this when it has finished a run of writes)."""
        with self._lock:
            self.current()
            self._save()

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, threads: int | None = None
    ) -> SearchResult | None:
        """:meth:`VectorIndex.search` on the current index (None when it is empty)."""
        index = self.current()
        if index is None:
            return None
        if query.shape[-1] != index.dim:
            raise InputShapeError(
                f"the query has {query.shape[-1]} values; stored vectors have {index.dim}"
            )
        # More neighbours than stored vectors cannot exist: asking FAISS for them would
        # only allocate (a huge k would exhaust memory).
        return index.search(query, min(k, max(1, len(index))), allowed_ids=allowed, threads=threads)

    # ---- internals ----------------------------------------------------------------------

    def _save(self) -> None:
        if self.index is None or self.applied_seq == self.saved_seq:
            return
        self._write(keep_previous=True)

    def _write(self, *, keep_previous: bool) -> None:
        assert self.index is not None
        save(
            self.index,
            self.folder,
            model_id=self.model_id,
            source_watermark=self.applied_seq,
            extra={"built_size": self.built_size, "source": self.source},
            keep_previous=keep_previous,
        )
        self.saved_seq = self.applied_seq

    def _unsaved(self) -> int:
        return self.applied_seq - self.saved_seq if self.index is not None else 0

    def _open(self) -> None:
        """Load the saved index if it matches the data, else rebuild it from the table."""
        self.model_id = self.feed.model_id()
        if (self.folder / "manifest.json").exists():
            try:
                self.index, generation, manifest = load(
                    self.folder, self.config, model_id=self.model_id
                )
                if manifest.extra.get("source", "") != self.source:
                    raise IndexLoadError(
                        f"{self.folder} was built from another database than the current one"
                    )
                self.applied_seq = self.saved_seq = generation.source_watermark
                self.built_size = int(manifest.extra.get("built_size", len(self.index)))
                self._catch_up()
                return
            except IndexLoadError as exc:
                log.warning("rebuilding the index of %s from its table: %s", self.name, exc)
        self._rebuild()

    def _catch_up(self) -> None:
        assert self.index is not None
        ids, vectors, seq = self.feed.changed_since(self.applied_seq)
        removed = self.feed.removed_since(self.applied_seq)
        if len(ids) or len(removed):
            if self.index.mmapped:  # a memory-mapped index is read-only
                self._rebuild()
                return
            if len(removed):
                self.index.remove(removed)
            if len(ids):
                self.index.upsert(ids, vectors)
        self.applied_seq = max(self.applied_seq, seq)
        self._maybe_regrow()

    def _rebuild(self) -> None:
        """Build from the table: streamed above ``compress_above`` vectors (peak memory:
        a training sample, one chunk and the index), gathered in memory below it."""
        self.model_id = self.feed.model_id()
        with self.feed.frozen(self.chunk_rows) as table:
            if table.rows > self.config.compress_above:
                log.info("%s: %d vectors, building streamed", self.name, table.rows)
                self.index = VectorIndex.build_streamed(
                    table.chunks, table.rows, table.dim, self.config, self.folder
                )
            elif table.rows:
                parts = list(table.chunks())
                ids = np.concatenate([i for i, _ in parts])
                vectors = np.concatenate([v for _, v in parts])
                del parts
                self.index = VectorIndex.build(ids, vectors, self.config)
            else:
                self.index = None
        self.built_size = table.rows
        self.applied_seq = table.seq
        self.saved_seq = 0
        self._save()

    def _maybe_regrow(self) -> None:
        assert self.index is not None
        if self.config.factory != "auto":
            return
        n = len(self.index)
        if self.index.is_ivf:
            outgrown = n > _REGROW * max(1, self.built_size)
        else:
            outgrown = n > self.config.flat_threshold
        if outgrown:
            log.info("%s: %d vectors, rebuilding as %s", self.name, n, self.config.factory_for(n))
            self._rebuild()
