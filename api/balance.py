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
HTTP/1.1 client) sees one reconnect. A worker sheds one connection at a time, and less
often while the connections it sheds come back to it (:meth:`ConnectionTable.should_shed`):
with both workers idle, the same one tends to win every accept, and balance matters
only under load anyway. A server with one worker has no table.

A worker claims its slot when it starts (:func:`claim_slot`, from the app's lifespan)
with an ``fcntl`` lock on the slot's bytes, which the kernel drops when the process ends,
``kill -9`` included; the worker uvicorn starts in its place claims the free slot and
starts it at zero. Each slot also holds its worker's process id, and a slot whose
process is gone is left out of the shares meanwhile, so a dead worker's last count does
not make the others shed connections while its replacement loads.

The parent writes the table's bytes (a file of holes would leave a full ``/dev/shm`` to
fail the first write with SIGBUS); where it cannot, the workers run unbalanced, as one
worker does. Tables left by a parent that was killed (``kill -9``) are removed by the
next ``serve`` that finds them.

``hear-features serve --workers N`` creates the table (:func:`shared_table`) and names
it to the workers in :data:`TABLE_ENV`; the HTTP protocol of each worker
(:class:`~hear_features.api.server.HeaderTimeoutProtocol`) counts and sheds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import mmap
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: The environment variable naming the table to every worker process.
TABLE_ENV = "HEAR_API_CONNECTION_TABLE"
#: Bytes per slot: the worker's process id and its count of open connections (int64).
SLOT_BYTES = 16
#: A worker sheds at most one connection per this many seconds...
MIN_GAP_S = 0.05
#: ... and, while shed connections keep coming back to it, ever less often, down to one
#: per this many seconds.
MAX_GAP_S = 5.0
#: Names of table files: the prefix, then the creating parent's process id.
PREFIX = "hear-features-connections-"
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
        self._table = memoryview(self._map).cast("q")  # pid, count, pid, count, ...
        self.slot = self._claim()
        self._pid = os.getpid()
        self._table[2 * self.slot + 1] = 0
        self._table[2 * self.slot] = self._pid
        self._next_shed = 0.0
        self._gap_s = MIN_GAP_S
        self._after_shed: int | None = None

    @property
    def workers(self) -> int:
        return len(self._table) // 2

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
        self._table[2 * self.slot + 1] += 1

    def closed(self) -> None:
        """One connection of this worker fewer."""
        at = 2 * self.slot + 1
        self._table[at] = max(0, self._table[at] - 1)

    def counts(self) -> list[int]:
        """Open connections per worker, this one at :attr:`slot`."""
        return self._table.tolist()[1::2]

    def over_share(self) -> bool:
        """Whether this worker should shed a connection (see the module's docstring)."""
        table = self._table.tolist()
        counts = table[1::2]
        mine = counts[self.slot]
        share = -(-sum(counts) // len(counts))
        if mine <= share or mine - min(counts) < SLACK:
            return False
        # Rarely reached (an uneven spread): leave out slots whose worker is gone.
        live = [mine] + [
            count
            for slot, (pid, count) in enumerate(zip(table[::2], counts, strict=True))
            if slot != self.slot and _alive(pid)
        ]
        share = -(-sum(live) // len(live))
        return mine > share and mine - min(live) >= SLACK

    def should_shed(self, now: float) -> bool:
        """Whether to shed a connection now: this worker is over its share, and the last
        shed was long enough ago. At most one per :data:`MIN_GAP_S`; when the last one
        came back (both workers idle, the same one accepted it again), the gap doubles up
        to :data:`MAX_GAP_S`, so that a light load never turns into a reconnect storm."""
        if now < self._next_shed or not self.over_share():
            return False
        mine = self._table[2 * self.slot + 1]
        came_back = self._after_shed is not None and mine > self._after_shed
        self._gap_s = min(self._gap_s * 2, MAX_GAP_S) if came_back else MIN_GAP_S
        self._after_shed = mine - 1
        self._next_shed = now + self._gap_s
        return True


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@functools.cache
def worker_table() -> ConnectionTable | None:
    """This process's slot in the table named by :data:`TABLE_ENV` (None: no table, or
    one that cannot be used, in which case connections are not balanced)."""
    path = os.environ.get(TABLE_ENV)
    if not path:
        return None
    try:
        return ConnectionTable(Path(path))
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("connections not balanced across workers: %s", exc)
        return None


def claim_slot() -> None:
    """Claim this worker's slot now (at start-up), not at its first connection: until a
    replacement worker claims its slot, the slot still shows the dead worker."""
    worker_table()


@contextlib.contextmanager
def shared_table(workers: int) -> Iterator[Path | None]:
    """A zeroed table of ``workers`` slots, named in :data:`TABLE_ENV` for the worker
    processes started inside the block, and removed after it. One worker, or no folder
    that takes the file: no table (and none inherited from the environment)."""
    os.environ.pop(TABLE_ENV, None)
    path = _create(workers) if workers >= 2 else None
    if path is None:
        yield None
        return
    try:
        os.environ[TABLE_ENV] = str(path)
        yield path
    finally:
        os.environ.pop(TABLE_ENV, None)
        path.unlink(missing_ok=True)


def _create(workers: int) -> Path | None:
    for folder in ("/dev/shm", tempfile.gettempdir()):
        if not os.access(folder, os.W_OK):
            continue
        _remove_orphans(Path(folder))
        fd, name = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", dir=folder)
        try:
            size = workers * SLOT_BYTES
            if os.write(fd, bytes(size)) == size:  # real bytes: no hole to fault on
                return Path(name)
        except OSError as exc:  # a full tmpfs
            log.warning("no connection table in %s: %s", folder, exc)
        finally:
            os.close(fd)
        Path(name).unlink(missing_ok=True)
    log.warning("connections not balanced across workers: no folder takes the table")
    return None


def _remove_orphans(folder: Path) -> None:
    """Remove tables whose parent process is gone (it was killed before cleaning up)."""
    for stale in folder.glob(f"{PREFIX}*"):
        pid = stale.name.removeprefix(PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()
