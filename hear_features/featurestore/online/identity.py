"""The online database's identity: its id, and whether ``feast apply`` set a view up.

A record of what reached the online store (:mod:`~hear_features.featurestore.watermark`)
is only true of the database it was measured against. Each database therefore carries a
random id, made when ``feast apply`` sets it up: a database removed and made again gets
another id, so nothing recorded for the old one counts for the new one.

A materialisation against a database that was removed would otherwise stop in SQLite's
``no such table`` deep inside Feast; :func:`applied_id` refuses first, saying to run
``feast apply``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from typing import Final

from hear_features.errors import ConfigError
from hear_features.featurestore.online.database import connection
from hear_features.featurestore.online.sqlite import ViewTable

#: The table of facts about the database as a whole (its id).
META_TABLE: Final = "hear_store_meta"


def database_id(table: ViewTable) -> str:
    """The random id of the database holding ``table``, made the first time it is asked
    for (``feast apply`` asks)."""
    conn = connection(table.database)
    with contextlib.suppress(sqlite3.OperationalError):  # no such table: made below
        row = conn.execute(f"SELECT value FROM \"{META_TABLE}\" WHERE key = 'id'").fetchone()
        if row:  # read only: a read-only copy of a repository is searched as it is
            return str(row[0])
    conn.execute(
        f'CREATE TABLE IF NOT EXISTS "{META_TABLE}" (key TEXT PRIMARY KEY, value TEXT NOT NULL)'
    )
    conn.execute(
        f"INSERT OR IGNORE INTO \"{META_TABLE}\" (key, value) VALUES ('id', ?)", (uuid.uuid4().hex,)
    )
    row = conn.execute(f"SELECT value FROM \"{META_TABLE}\" WHERE key = 'id'").fetchone()
    return str(row[0])


def applied_id(table: ViewTable, view: str) -> str:
    """The id of the database holding ``table`` (feature view ``view``), once ``feast
    apply`` has set the view up there; :class:`ConfigError` saying to run ``feast apply``
    when the database or the view's table is missing (removed, or never made)."""
    if not table.database.exists() or not table.exists():
        raise ConfigError(
            f"the online store has no table for feature view {view} "
            f"({table.database} was removed, or never set up): run `feast apply`, "
            "then materialize again"
        )
    return database_id(table)
