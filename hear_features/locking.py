"""Advisory file locks: two writers of one table take turns instead of losing rows, and a
table is not replaced under a reader that reopens it by name."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from hear_features.errors import LockTimeout


@contextlib.contextmanager
def file_lock(
    target: Path,
    *,
    timeout_s: float = 600.0,
    what: str = "this table",
    suffix: str = ".lock",
    shared: bool = False,
    busy: str = "being written by another process",
) -> Iterator[None]:
    """Hold a lock on ``<target><suffix>`` for the duration of the block: exclusive, or
    ``shared`` with other shared holders.

    Waits up to ``timeout_s`` (0 means: fail at once) and then raises
    :class:`LockTimeout` saying what ``what`` is ``busy`` with, naming the lock file and
    its last exclusive holder.
    """
    lock_path = target.with_name(target.name + suffix)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise LockTimeout(
                        f"{what} is {busy} (pid {holder}, lock file {lock_path}); "
                        f"waited {timeout_s:.0f} s. Try again when it has finished."
                    ) from None
                time.sleep(0.1)
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
