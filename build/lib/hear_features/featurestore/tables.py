"""Reading and writing the offline tables (Parquet files).

Their columns are in :mod:`hear_features.schema`, plus the study's own columns
(:mod:`hear_features.study`). Writes replace the whole file atomically, so readers,
including a DuckDB query running at the same time, see the old table or the new one,
never a mix.

Schema evolution: a nullable column the file lacks (a study column declared after rows
were written) reads as nulls, and a column the file holds but the caller does not ask
for (a study column no longer declared) is kept through every rewrite: no write drops
stored data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hear_features.atomic import atomic_path
from hear_features.errors import ConfigError


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    """The table at ``path`` with ``schema``'s columns first (nulls for nullable ones the
    file lacks), then any other columns the file holds; an empty table with ``schema``
    when there is no file yet. :class:`ConfigError` for a required column the file lacks
    or a column whose values do not fit ``schema``'s type."""
    if not path.exists():
        return schema.empty_table()
    return conform(pq.read_table(path), schema, str(path))


def conform(table: pa.Table, schema: pa.Schema, name: str = "table") -> pa.Table:
    """``table`` as ``schema`` (see :func:`read_table`), extra columns kept at the end."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns: list[pa.ChunkedArray] = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(_cast(table[field.name], field, name))
        elif field.nullable:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, field.type)]))
        else:
            raise ConfigError(f"{name} has no column {field.name!r}")
    extra = [f for f in table.schema if f.name not in schema.names]
    return pa.Table.from_arrays(
        [*columns, *(table[f.name] for f in extra)], schema=pa.schema([*schema, *extra])
    )


def _cast(column: pa.ChunkedArray, field: pa.Field, name: str) -> pa.ChunkedArray:
    if column.type == field.type:
        return column
    try:
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(
            f"column {field.name!r} of {name} holds {column.type} values that cannot be read "
            f"as {field.type} (was its declared type changed?): {exc}"
        ) from None


#: Rows per Parquet row group of the offline tables. Row groups are what readers decode
#: in parallel and skip: at 100k clips a single group (pyarrow's default holds a million
#: rows) made DuckDB decode every stored vector to return a dozen rows (0.23 s against
#: 0.06 s) and a full read 7x slower; 8192 rows (16 MiB of vectors) cost 4% in file size.
#: Measured by bench/startup.py's one-shot ``more-like``.
ROW_GROUP_ROWS = 8192


def write_table(path: Path, table: pa.Table) -> None:
    """Replace ``path`` with ``table`` atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp:
        # zstd: 8% smaller, 2.5x slower to write
        pq.write_table(table, tmp, compression="snappy", row_group_size=ROW_GROUP_ROWS)


def ensure_table(path: Path, schema: pa.Schema) -> bool:
    """Create an empty table at ``path`` when none exists (Feast needs the file to exist),
    or add the columns of ``schema`` that the file lacks, as nulls (DuckDB reads what the
    views declare). Returns whether the file was written. Callers hold the table's lock."""
    if not path.exists():
        write_table(path, schema.empty_table())
        return True
    names = pq.read_schema(path).names
    if all(name in names for name in schema.names):
        return False
    write_table(path, read_table(path, schema))
    return True


def append_rows(path: Path, rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Append ``rows`` to the table at ``path`` (a full atomic rewrite); return the result.

    Columns of the file beyond ``schema`` are kept (null in the new rows)."""
    existing = read_table(path, schema)
    combined = pa.concat_tables([existing, conform(rows.select(schema.names), existing.schema)])
    write_table(path, combined)
    return combined


def newest_per_key(table: pa.Table, key: str, ts: str, created: str | None = None) -> pa.Table:
    """One row per ``key``: the newest by ``ts``, ties broken by ``created`` (the rule of
    Feast's point-in-time reads), in key order. Arrow throughout: no pandas round trip of
    the vectors."""
    if table.num_rows == 0:
        return table
    order = [(key, "ascending"), (ts, "descending")]
    if created:
        order.append((created, "descending"))
    table = table.take(pc.sort_indices(table, order))
    keys = table[key].to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return table.filter(pa.array(first))
