"""Keep-alive connections spread over uvicorn's worker processes.

uvicorn's workers share one listening socket, and the worker that wakes first accepts
every connection waiting (its event loop accepts until the queue is empty). A client
pool that opened 16 keep-alive connections at once was seen to put 15 of them on one of
two workers (``bench/api.py``, 2 cores): one process answered nearly every request,
bound by its own GIL, while the other core idled, and p99 was twice what two busy
workers give.

Each worker counts its open connections in its own slot of a small shared file, the
:class:`ConnectionTable` (one 64-bit count per worker). A worker holding more than its
share, ``ceil(total / workers)``, and at least :data:`SLACK` more than the least loaded
worker, answers its next request with ``Connection: close`` (RFC 9112, section 9.6):
the client opens a new connection, which a less busy worker, waiting in its event loop
rather than working, is the likelier to accept; if the busy one accepts it again, it
sheds it again after one request. A client that honours ``Connection: close`` (every
HTTP/1.1 client) sees one reconnect. A server with one worker has no table.

A worker claims its slot with an ``fcntl`` lock on the slot's bytes, which the kernel
drops when the process ends, ``kill -9`` included; the worker uvicorn starts in its
place claims the free slot and starts it at zero.

``hear-features serve --workers N`` creates the table (:func:`shared_table`) and names
it to the workers in :data:`TABLE_ENV`; the HTTP protocol of each worker
(:class:`~hear_features.api.server.HeaderTimeoutProtocol`) counts and sheds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import mmap
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: The environment variable naming the table to every worker process.
TABLE_ENV = "HEAR_API_CONNECTION_TABLE"
#: Bytes per slot: one signed 64-bit count.
SLOT_BYTES = 8
#: A worker sheds only when it holds at least this many connections more than the least
#: loaded one: with one more, moving a connection would only swap the two.
SLACK = 2


class ConnectionTable:
    """This worker's slot in the shared table of open connections per worker."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        if size < SLOT_BYTES or size % SLOT_BYTES:
            os.close(self._fd)
            raise ValueError(f"{path} is not a connection table ({size} bytes)")
        self._map = mmap.mmap(self._fd, size)
        self._counts = memoryview(self._map).cast("q")
        self.slot = self._claim()
        self._counts[self.slot] = 0

    @property
    def workers(self) -> int:
        return len(self._counts)

    def _claim(self) -> int:
        for slot in range(self.workers):
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, SLOT_BYTES, slot * SLOT_BYTES)
            except OSError:  # held by a live worker
                continue
            return slot
        os.close(self._fd)
        raise RuntimeError(f"all {self.workers} slots of the connection table are held")

    def opened(self) -> None:
        """One more connection on this worker."""
        self._counts[self.slot] += 1

    def closed(self) -> None:
        """One connection of this worker fewer."""
        self._counts[self.slot] = max(0, self._counts[self.slot] - 1)

    def counts(self) -> list[int]:
        """Open connections per worker, this one at :attr:`slot`."""
        return self._counts.tolist()

    def over_share(self) -> bool:
        """Whether this worker should shed a connection (see the module's docstring)."""
        counts = self._counts.tolist()
        mine = counts[self.slot]
        share = -(-sum(counts) // len(counts))
        return mine > share and mine - min(counts) >= SLACK


@functools.cache
def worker_table() -> ConnectionTable | None:
    """This process's slot in the table named by :data:`TABLE_ENV` (None: no table, or
    one that cannot be used, in which case connections are not balanced)."""
    path = os.environ.get(TABLE_ENV)
    if not path:
        return None
    try:
        return ConnectionTable(Path(path))
    except (OSError, ValueError, RuntimeError):
        return None


@contextlib.contextmanager
def shared_table(workers: int) -> Iterator[Path | None]:
    """A zeroed table of ``workers`` slots, named in :data:`TABLE_ENV` for the worker
    processes started inside the block, and removed after it. One worker: no table."""
    if workers < 2:
        yield None
        return
    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    fd, name = tempfile.mkstemp(prefix="hear-features-connections-", dir=folder)
    path = Path(name)
    try:
        os.ftruncate(fd, workers * SLOT_BYTES)
        os.close(fd)
        os.environ[TABLE_ENV] = name
        yield path
    finally:
        os.environ.pop(TABLE_ENV, None)
        path.unlink(missing_ok=True)
