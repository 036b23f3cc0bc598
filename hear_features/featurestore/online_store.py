"""``HearOnlineStore``: the project's Feast online store.

Key-value features live in SQLite (WAL mode, so readers in other processes never block
on a writer): one table per feature view and one row per entity, whose features are one
serialized ``feast.types.Map`` (a 512-float embedding and its metadata are read in one
row fetch). A write carries all of a view's features for an entity and replaces the row,
unless the stored row has a newer event timestamp: the newest wins, whatever order
writes arrive in.

The store also tells the on-demand transformation which encoder to use: Feast hands it
the repository configuration on every read and write, and it passes the encoder
settings from ``feature_store.yaml`` on to :mod:`hear_features.featurestore.runtime`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from feast import Entity, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Map as MapProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig

from hear_features.featurestore import runtime
from hear_features.featurestore.settings import EncoderSettings

STORE_TYPE: Final = "hear_features.featurestore.online_store.HearOnlineStore"


class HearOnlineStoreConfig(FeastConfigBaseModel):
    """The ``online_store:`` section of ``feature_store.yaml``."""

    type: Literal["hear_features.featurestore.online_store.HearOnlineStore"] = STORE_TYPE
    path: str = "data/online.db"
    """SQLite file for key-value features; relative paths are relative to the repo."""


Row = tuple[EntityKeyProto, dict[str, ValueProto], dt.datetime, dt.datetime | None]


class HearOnlineStore(OnlineStore):
    """SQLite key-value storage for Feast features."""

    def __init__(self) -> None:
        self._local = threading.local()

    # ---- Feast interface ------------------------------------------------------------

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        self._activate_encoder(config)
        conn = self._conn(config)
        name = _table_name(config, table)
        version = config.entity_key_serialization_version
        rows = [
            (
                serialize_entity_key(key, entity_key_serialization_version=version),
                MapProto(val=values).SerializeToString(),
                _micros(event_ts),
                _micros(created_ts) if created_ts is not None else None,
            )
            for key, values, event_ts, created_ts in data
        ]
        with conn:
            _create_table(conn, name)
            conn.executemany(
                f"""INSERT INTO "{name}" (entity_key, features, event_ts, created_ts)
                    VALUES (?, ?, ?, ?)
                    ON CONFLICT (entity_key) DO UPDATE SET
                        features = excluded.features,
                        event_ts = excluded.event_ts,
                        created_ts = excluded.created_ts
                    WHERE excluded.event_ts >= "{name}".event_ts""",
                rows,
            )
        if progress is not None:
            progress(len(data))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[dt.datetime | None, dict[str, ValueProto] | None]]:
        self._activate_encoder(config)
        version = config.entity_key_serialization_version
        keys = [
            serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys
        ]
        found = self.read_serialized(config, table, keys, requested_features)
        return [found.get(k, (None, None)) for k in keys]

    def get_online_features(self, config: RepoConfig, *args: Any, **kwargs: Any) -> Any:
        self._activate_encoder(config)
        return super().get_online_features(config, *args, **kwargs)

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        conn = self._conn(config)
        with conn:
            for view in tables_to_keep:
                _create_table(conn, _table_name(config, view))
            for view in tables_to_delete:
                conn.execute(f'DROP TABLE IF EXISTS "{_table_name(config, view)}"')

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        conn = self._conn(config)
        with conn:
            for view in tables:
                conn.execute(f'DROP TABLE IF EXISTS "{_table_name(config, view)}"')

    # ---- helpers shared with the vector search ---------------------------------------

    def read_serialized(
        self,
        config: RepoConfig,
        table: FeatureView,
        keys: list[bytes],
        requested_features: list[str] | None = None,
    ) -> dict[bytes, tuple[dt.datetime, dict[str, ValueProto]]]:
        """Features by serialized entity key; absent keys are absent from the result."""
        conn = self._conn(config)
        name = _table_name(config, table)
        result: dict[bytes, tuple[dt.datetime, dict[str, ValueProto]]] = {}
        if not keys or not _table_exists(conn, name):
            return result
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            cursor = conn.execute(
                f'SELECT entity_key, features, event_ts FROM "{name}" '
                f"WHERE entity_key IN ({marks})",
                chunk,
            )
            for key, blob, event_ts in cursor:
                row = MapProto()
                row.ParseFromString(blob)
                features = (
                    {f: row.val[f] for f in requested_features if f in row.val}
                    if requested_features
                    else dict(row.val)
                )
                result[key] = (_from_micros(event_ts), features)
        return result

    def _conn(self, config: RepoConfig) -> sqlite3.Connection:
        """One connection per thread and database file (sqlite3 objects are not thread-safe)."""
        path = _db_path(config)
        conns: dict[Path, sqlite3.Connection] = getattr(self._local, "conns", None) or {}
        self._local.conns = conns
        if path not in conns:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conns[path] = conn
        return conns[path]

    @staticmethod
    def _activate_encoder(config: RepoConfig) -> None:
        runtime.activate(EncoderSettings.from_repo_config(config))


def _db_path(config: RepoConfig) -> Path:
    path = Path(config.online_store.path)
    if not path.is_absolute() and config.repo_path:
        path = Path(config.repo_path) / path
    return path


def _table_name(config: RepoConfig, view: FeatureView) -> str:
    return f"{config.project}_{view.name}".replace('"', "")


def _create_table(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS "{name}" (
                entity_key BLOB PRIMARY KEY,
                features BLOB NOT NULL,
                event_ts INTEGER NOT NULL,
                created_ts INTEGER
            )"""
    )


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _micros(ts: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (naive timestamps are UTC, as Feast says)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return (ts - _EPOCH) // _MICROSECOND


def _from_micros(value: int) -> dt.datetime:
    return _EPOCH + value * _MICROSECOND


def _chunks(items: list[bytes], size: int) -> list[list[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
