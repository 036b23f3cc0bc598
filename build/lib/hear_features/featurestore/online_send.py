"""The online half of ``feast materialize``: which rows go online, and the write.

One rule for every view (:func:`rows_to_send`): the task's window and every row not yet
confirmed online (:mod:`~hear_features.featurestore.watermark`), whatever its event
timestamp, newest per entity. For a plain view over one Parquet file
(:func:`parquet_table`, ``clip_metadata``) the file is read with pyarrow, as Feast's local
engine would, without its DuckDB round trip and per-value conversions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureView, FileSource
from feast.infra.common.materialization_job import MaterializationTask
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from feast.utils import _convert_arrow_to_proto

from hear_features.featurestore.online.store import HearOnlineStore
from hear_features.featurestore.tables import newest_per_key
from hear_features.featurestore.watermark import OnlineWatermark
from hear_features.schema import CREATED, EVENT_TIMESTAMP, JOIN_KEY

#: Rows per online write: bounds the memory of the proto conversion.
ONLINE_BATCH = 10_000


def rows_to_send(
    table: pa.Table, task: MaterializationTask, watermark: OnlineWatermark, key: str = JOIN_KEY
) -> pa.Table:
    """The rows to write online, by one rule for every view: the task's window and every
    row not yet confirmed online (whatever its event timestamp), newest per entity.

    ``table`` has ``event_timestamp`` and (for the watermark) ``created`` columns."""
    wanted = in_window(table, task, EVENT_TIMESTAMP)
    if CREATED in table.column_names:
        wanted = pc.or_(wanted, watermark.unsent(table, task.end_time))
    created = CREATED if CREATED in table.column_names else None
    return newest_per_key(table.filter(wanted), key, EVENT_TIMESTAMP, created)


def parquet_table(online_store: Any, task: MaterializationTask) -> pa.Table | None:
    """The whole Parquet file of a plain view (its timestamp columns named
    ``event_timestamp`` and ``created``); None when the view is not such a view, or the
    online store is not ours (then Feast's local engine does the work)."""
    view = task.feature_view
    source = view.batch_source
    if not (
        isinstance(online_store, HearOnlineStore)
        and type(view) is FeatureView
        and isinstance(source, FileSource)
        and source.path.endswith(".parquet")
        and not source.field_mapping
        and len(view.join_keys) == 1
    ):
        return None
    table = pq.read_table(source.path)
    created = source.created_timestamp_column or None
    renames = {source.timestamp_field: EVENT_TIMESTAMP, **({created: CREATED} if created else {})}
    return table.rename_columns([renames.get(c, c) for c in table.column_names])


def write_online(
    online_store: Any,
    config: RepoConfig,
    registry: BaseRegistry,
    task: MaterializationTask,
    rows: pa.Table,
) -> int:
    """Write Arrow rows of ``task``'s view to any online store, in bounded batches:
    directly to :class:`HearOnlineStore` (its Arrow fast path, then one index save),
    else through Feast's Arrow-to-proto conversion."""
    if rows.num_rows == 0:
        return 0
    view = task.feature_view
    join_keys = {
        entity.join_key: entity.value_type
        for entity in (registry.get_entity(name, task.project) for name in view.entities)
    }
    bar = task.tqdm_builder(rows.num_rows) if task.tqdm_builder else None
    progress = bar.update if bar is not None else None
    direct = isinstance(online_store, HearOnlineStore) and len(join_keys) == 1
    for batch in rows.to_batches(max_chunksize=ONLINE_BATCH):
        if direct:
            (join_key,) = join_keys
            online_store.write_arrow(
                config, view, pa.Table.from_batches([batch]), join_key, progress
            )
        else:
            protos = _convert_arrow_to_proto(batch, view, join_keys)
            online_store.online_write_batch(config, view, protos, progress)
    if direct:
        online_store.checkpoint(config, view)
    if bar is not None:
        bar.close()
    return rows.num_rows


def in_window(table: pa.Table, task: MaterializationTask, ts: str) -> pa.ChunkedArray:
    """Rows with ``start <= ts < end`` (every row with ``disable_event_timestamp``)."""
    column = table[ts]
    if task.disable_event_timestamp:
        return pa.chunked_array([pa.array(np.ones(table.num_rows, dtype=bool))])
    after_start = pc.greater_equal(column, pa.scalar(task.start_time, column.type))
    return pc.and_(after_start, pc.less(column, pa.scalar(task.end_time, column.type)))


def only_clips(table: pa.Table, clip_ids: frozenset[str], keep: bool = True) -> pa.Table:
    """The rows of ``table`` whose ``clip_id`` is in ``clip_ids`` (``keep=False``: the
    other rows)."""
    chosen = pc.is_in(table[JOIN_KEY], value_set=pa.array(sorted(clip_ids), pa.string()))
    return table.filter(chosen if keep else pc.invert(chosen))
