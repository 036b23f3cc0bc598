"""Atomic file replacement: write beside the target, fsync, rename, fsync the folder.

Readers see either the old file or the new one, never a half-written one. The new file
keeps the permissions of the one it replaces, and a new one gets what ``open()`` would
give it (0666 less the umask), not the temporary file's 0600: a lab that shares a
repository through group permissions keeps reading it after each write. A process
killed mid-write leaves a stray ``.<name>.<pid>.<random>.tmp`` file; the next write of
the same target deletes the strays of processes that no longer exist. Used for every
file that matters (Parquet tables, index files, manifests).
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces the target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_strays(target)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fsync_file(tmp)
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _mode_for(target: Path) -> int:
    """The permission bits a replacement of ``target`` gets (see the module docstring)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by
    setting it, which would race with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022  # the common default where /proc is not available


def remove_strays(target: Path) -> list[Path]:
    """Delete temporary files of ``target`` left by writers that were killed."""
    removed = []
    prefix = f".{target.name}."
    for name in glob.glob(glob.escape(str(target.parent / prefix)) + "*.tmp"):
        stray = Path(name)
        pid = stray.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                stray.unlink()
                removed.append(stray)
    return removed


def remove_dead_strays(folder: Path) -> list[Path]:
    """Delete every temporary file under ``folder`` (recursively) left by a writer that
    was killed: they may hold copies of rows deleted since (``hear-features forget``)."""
    removed = []
    for stray in folder.rglob(".*.tmp") if folder.is_dir() else []:
        parts = stray.name.rsplit(".", 3)  # [".<target>", pid, random, "tmp"]
        if len(parts) == 4 and parts[1].isdigit() and not _alive(int(parts[1])):
            with contextlib.suppress(FileNotFoundError):
                stray.unlink()
                removed.append(stray)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
