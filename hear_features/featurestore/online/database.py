"""The online store's SQLite file: one connection per thread, transactions, and the
rewrite that leaves no deleted bytes behind.

WAL journal mode lets readers in other processes go on while one process writes.

Every connection has ``secure_delete`` on: a deleted or overwritten row's bytes (a cell,
an overflow page, a freed page) are zeroed as it goes, so an update of a row leaves no
stale copy of its old value in free space. A database whose every writer did so is
marked (``PRAGMA user_version`` = :data:`ALWAYS_ZEROED`, set when this module creates
the file); after a deletion, such a file only needs its write-ahead log emptied, not a
rewrite of every page. An older file (no mark) is rewritten once (``VACUUM``) by the
first :func:`vacuum`, and marked.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hear_features.errors import ConfigError, LockTimeout

_local = threading.local()

#: ``PRAGMA user_version`` of a database in which every freed byte was zeroed.
ALWAYS_ZEROED = 1


def connection(path: Path) -> sqlite3.Connection:
    """This thread's connection to the database at ``path`` (sqlite3 objects are not
    thread-safe): autocommit mode (transactions are opened explicitly), WAL journal."""
    conns: dict[Path, sqlite3.Connection] = getattr(_local, "conns", None) or {}
    _local.conns = conns
    if path not in conns:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            # SQLite's WAL journal needs its -wal and -shm files beside the database
            # even to read it; without write access it fails deep in a query.
            raise ConfigError(
                f"the online database {path} (or its folder) is not writable by this user: "
                "searching it needs write access to that folder, for SQLite's journal files"
            )
        new = not path.exists() or path.stat().st_size == 0
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA secure_delete = ON")  # before any write: see the module doc
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if new:
            conn.execute(f"PRAGMA user_version = {ALWAYS_ZEROED}")
        conns[path] = conn
    return conns[path]


@contextlib.contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Reads inside the block see one committed state (a read transaction, unless the
    connection is already in one)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: committed when the block ends, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def vacuum(database: Path) -> None:
    """Leave no deleted bytes in the database's files: empty the write-ahead log (whose
    old frames may hold them), and rewrite a file not marked :data:`ALWAYS_ZEROED`
    (``VACUUM``, once; then mark it). In a marked file the deletion itself zeroed them.

    ``VACUUM`` in WAL mode writes the new pages to the log; the ``TRUNCATE`` checkpoint
    copies them into the file and truncates the log to zero bytes. It waits (up to the
    connection's 30 s busy timeout) for readers of older snapshots to finish, and
    raises :class:`~hear_features.errors.LockTimeout` when they do not.
    """
    if not database.exists():
        return
    conn = connection(database)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if conn.execute("PRAGMA user_version").fetchone()[0] != ALWAYS_ZEROED:
        conn.execute("VACUUM")
        conn.execute(f"PRAGMA user_version = {ALWAYS_ZEROED}")
    for _ in range(10):
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.5)
    raise LockTimeout(
        f"{database}: readers kept old snapshots open, so its write-ahead log could not be "
        "emptied; run the same forget again when they have finished"
    )
