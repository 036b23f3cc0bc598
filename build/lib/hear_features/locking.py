"""Advisory file locks, so two writers of one table take turns instead of losing rows."""

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
    target: Path, *, timeout_s: float = 600.0, what: str = "this table"
) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` for the duration of the block.

    Waits up to ``timeout_s`` (0 means: fail at once) and then raises
    :class:`LockTimeout` naming the lock file and the process that holds it.
    """
    lock_path = target.with_name(target.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise LockTimeout(
                        f"{what} is being written by another process (pid {holder}, lock file "
                        f"{lock_path}); waited {timeout_s:.0f} s. Try again when it has finished."
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
