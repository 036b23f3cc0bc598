"""Reading and writing the offline tables (Parquet files).

Their columns are in :mod:`hear_features.schema`, plus the study's own columns
(:mod:`hear_features.study`). Writes replace the whole file atomically (a new file
renamed over the old), so a reader that opens the file once sees the old table or the
new one, never a mix. Readers that reopen the file by name during one read (DuckDB, and
with it Feast's offline store) read either through :func:`snapshot` (the file opened
once) or inside :func:`reading`, which :func:`write_table` waits for. DuckDB also reads
meaning into a path (``KEY=VALUE`` folders become partition columns, ``*?[`` globs):
:func:`check_table_path` refuses such paths.

Schema evolution: a nullable column the file lacks (a study column declared after rows
were written) reads as nulls, and a column the file holds but the caller does not ask
for (a study column no longer declared) is kept through every rewrite: no write drops
stored data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hear_features.atomic import atomic_path
from hear_features.errors import ConfigError
from hear_features.locking import file_lock


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    """The table at ``path`` with ``schema``'s columns first (nulls for nullable ones the
    file lacks), then any other columns the file holds; an empty table with ``schema``
    when there is no file yet. :class:`ConfigError` for a required column the file lacks
    or a column whose values do not fit ``schema``'s type."""
    if not path.exists():
        return schema.empty_table()
    # Pages carry CRC-32 checksums (write_table): here a damaged page is an error. DuckDB
    # (Feast's offline store, offline_rows) does not check them.
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"offline table {path} cannot be read (damaged?): {exc}") from exc
    return conform(table, schema, str(path))


def check_table_path(path: Path, columns: Collection[str] = ()) -> None:
    """Refuse (:class:`ConfigError`) a table path that DuckDB, which Feast's offline store
    reads it with, would not read as the file it names: a folder named ``KEY=VALUE`` where
    ``KEY`` is one of ``columns`` or of the file's own (taken for a partition column,
    every row would read ``VALUE`` for it), or a glob character (``*``, ``?``, ``[``),
    which can make it read other files. Other ``KEY=VALUE`` folders (``run=1``) only add
    a column nobody reads, and pass."""
    if any(ch in str(path) for ch in "*?["):
        raise ConfigError(
            f"the offline table path {path} holds a glob character (* ? [): DuckDB would "
            "read every file it matches; move or rename the folder"
        )
    folders = [p for p in path.parent.parts if "=" in p]
    if not folders:
        return
    names = set(columns)
    if path.is_file():
        names |= set(pq.read_schema(path).names)
    for part in folders:
        key = part.split("=", 1)[0]
        if key in names:
            raise ConfigError(
                f"the offline table {path} lies in a folder named {part!r}: DuckDB would "
                f"read it as a partition column, and every row's {key!r} as "
                f"{part.split('=', 1)[1]!r}; move or rename the folder"
            )


@contextlib.contextmanager
def snapshot(path: Path) -> Iterator[str]:
    """A name for the file that ``path`` names now, valid for the block: the file is
    opened once and the name (``/proc/self/fd/N``) reaches that open file, so readers
    that reopen the name (DuckDB does, per thread) keep reading this version after a
    writer has renamed a new table over ``path``, and the name holds no character a
    reader could interpret (DuckDB takes ``KEY=VALUE`` folders for partition columns and
    ``*?[`` for globs). Where the system has no such names, the path itself.
    ``FileNotFoundError`` when there is no file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        folder = next((f for f in ("/proc/self/fd", "/dev/fd") if os.path.isdir(f)), None)
        yield f"{folder}/{fd}" if folder else str(path)
    finally:
        os.close(fd)


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


#: Beside each table, the lock its readers share and its writer takes alone to replace it.
READERS_LOCK = ".readers.lock"


@contextlib.contextmanager
def reading(path: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Keep ``path`` from being replaced while the block reads it by name.

    For readers that reopen the file by its path during one read (Feast's DuckDB offline
    store does, per thread): a rename in between would mix two versions into one answer.
    Readers share the lock; :func:`write_table` waits for them (and they for it). Where
    the lock file cannot be created (a read-only copy of a repository), nobody can
    replace the table either, and the block runs unlocked."""
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):  # no permission, or a read-only file system
            stack.enter_context(
                file_lock(
                    path,
                    timeout_s=timeout_s,
                    what=f"table {path}",
                    suffix=READERS_LOCK,
                    shared=True,
                )
            )
        yield


def write_table(path: Path, table: pa.Table, timeout_s: float = 600.0) -> None:
    """Replace ``path`` with ``table`` atomically (temp file, fsync, rename), once no
    :func:`reading` block reads it."""
    with (
        file_lock(
            path,
            timeout_s=timeout_s,
            what=f"table {path}",
            suffix=READERS_LOCK,
            busy="being read by other processes",
        ),
        atomic_path(path) as tmp,
    ):
        # zstd: 8% smaller, 2.5x slower to write
        pq.write_table(
            table,
            tmp,
            compression="snappy",
            row_group_size=ROW_GROUP_ROWS,
            write_page_checksum=True,
        )


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
