"""Running FAISS from several threads: a read-write lock, and OpenMP threads per call."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import faiss


class ReadWriteLock:
    """Many readers (CPU searches) at once, or one writer (changes, GPU searches).

    A waiting writer holds back new readers, so a stream of searches cannot starve an
    index update.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


@contextlib.contextmanager
def omp_threads(n: int | None) -> Iterator[None]:
    """Run a search with ``n`` OpenMP threads (None: leave FAISS's default)."""
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
