"""The forget journal: what an interrupted ``hear-features forget`` still has to do.

It is a table of the online store's database, because that is the first store a forget
changes: the journal entry is written in the same transaction that deletes the clips
from every online view (:func:`hear_features.featurestore.online.erasure.delete`). So a
forget killed at any moment has either done nothing at all, or removed the clips from
every online read (search, the explorer's map, Feast's ``get_online_features`` and
``retrieve_online_documents_v2``) and left an entry saying what else must go: the index
files, the offline tables, the database's free pages. The next forget, register or
materialise finishes it (:func:`hear_features.featurestore.forget.resume`), and the
readers of the offline tables leave its clips out until then.

An entry names no clip and no person (clip ids are kept as salted hashes, see
:class:`~hear_features.featurestore.forget_plan.ForgetRecord`), so the rewrite of the
database can run while it is there; it is deleted when the forget is complete.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hear_features.featurestore.online.database import connection

TABLE = "hear_forget_journal"


class Journal:
    """The forget journal of one online database (on this thread's connection)."""

    def __init__(self, database: Path) -> None:
        self.database = database

    @property
    def conn(self) -> sqlite3.Connection:
        return connection(self.database)

    def add(self, forget_id: str, record: str) -> None:
        """Record a forget; call inside the transaction that deletes its online rows."""
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, record TEXT NOT NULL)"
        )
        self.conn.execute(
            f"INSERT OR REPLACE INTO {TABLE} (id, record) VALUES (?, ?)", (forget_id, record)
        )

    def pending(self) -> list[tuple[str, str]]:
        """(id, record) of every forget not complete yet, oldest first; an empty list
        (and no file created) for a database that does not exist."""
        if not self.database.exists():
            return []
        try:
            rows = self.conn.execute(f"SELECT id, record FROM {TABLE} ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:  # no journal yet: nothing was ever forgotten
            return []
        return [(str(i), str(r)) for i, r in rows]

    def finished(self, forget_id: str) -> None:
        """Every store is clean of this forget's clips: drop its entry."""
        self.conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", (forget_id,))
