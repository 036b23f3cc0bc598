"""The vector indexes this process holds: one per (database, table, metric).

Shared by every instance of the online store (Feast's own and the search service's),
so a process keeps one copy of each index however many instances it creates.

Which metric: a vector field's declared ``vector_search_metric`` wins (as in Feast's own
retrieval, which replaces the requested metric with it); a field that declares none is
searched with the metric asked for (Feast's default request is ``L2``), each metric
with an index of its own, built from the same table on first use. The index kept up as
vectors arrive is the declared metric's, or cosine's.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from hear_features.featurestore.online.identity import database_id
from hear_features.featurestore.online.sqlite import ViewTable
from hear_features.index import IndexConfig, Metric
from hear_features.index.sync import IndexSync

_SYNCS: dict[tuple[Path, str, Metric], IndexSync] = {}
_LOCK = threading.Lock()


def index_for(
    table: ViewTable,
    root: Path,
    config: IndexConfig,
    declared: str | None,
    requested: str | None = None,
) -> IndexSync:
    """The index of ``table`` for the metric it is searched with (see the module doc);
    its files live in ``root``."""
    chosen = Metric.parse(declared or requested)
    key = (table.database, table.name, chosen)
    with _LOCK:
        sync = _SYNCS.get(key)
        if sync is None:
            primary = Metric.parse(declared)  # cosine when nothing is declared
            folder = root / (table.name if chosen is primary else f"{table.name}.{chosen}")
            source = database_id(table)  # a database made again invalidates saved indexes
            sync = IndexSync(table, folder, config.with_metric(chosen), table.name, source=source)
            _SYNCS[key] = sync
        return sync


def indexes_of(table: ViewTable) -> list[IndexSync]:
    """Every index of ``table`` open in this process."""
    with _LOCK:
        return [s for k, s in _SYNCS.items() if k[:2] == (table.database, table.name)]


def saved_indexes(
    table: ViewTable, root: Path, config: IndexConfig, declared: str | None
) -> list[IndexSync]:
    """The indexes of ``table`` saved under ``root`` (a folder per metric), opened in
    this process. A folder of another metric than a declared one is never searched
    again: it is deleted rather than opened."""
    found = [index_for(table, root, config, declared)] if (root / table.name).is_dir() else []
    for folder in sorted(root.glob(f"{table.name}.*")):
        metric = folder.name[len(table.name) + 1 :]
        if metric not in {str(m) for m in Metric}:
            continue  # not an index of this table
        if declared is not None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            found.append(index_for(table, root, config, None, metric))
    return found


def drop(table: ViewTable, root: Path) -> None:
    """Forget the indexes of ``table`` and delete their files."""
    with _LOCK:
        for key in [k for k in _SYNCS if k[:2] == (table.database, table.name)]:
            del _SYNCS[key]
    for folder in [root / table.name, *root.glob(f"{table.name}.*")]:
        shutil.rmtree(folder, ignore_errors=True)
