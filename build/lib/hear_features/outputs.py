"""Tables written to a user's file (``--out``): Parquet, CSV or JSON lines, by its ending.

Every command that writes a table (``embed``, ``training-set``, ``more-like``) goes
through :class:`TableWriter`, so the three formats mean the same everywhere:

* ``.parquet``: the table as it is (zstd); embeddings stay ``list<float32>``;
* ``.csv``: one header row; an embedding is one cell holding a JSON array
  (``"[0.01, -0.2, ...]"``), timestamps are ISO 8601 in UTC;
* ``.jsonl``: one JSON object per row; embeddings are arrays, timestamps ISO 8601
  strings, missing values ``null``.

Floats of ``float32`` columns are written with the shortest text that reads back as the
same ``float32``. Any other ending is refused before any work starts (a ``.txt`` that
silently held Parquet would be a silently wrong answer). Writes are atomic: the file
appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from hear_features.atomic import atomic_path
from hear_features.defaults import OUTPUT_FORMATS
from hear_features.errors import ConfigError


def output_format(path: str | os.PathLike[str]) -> str:
    """The ending of ``path`` if it names a format we write, else :class:`ConfigError`."""
    ending = Path(path).suffix.lower()
    if ending not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        shown = f"ending {ending!r}" if ending else "no ending"
        raise ConfigError(f"output file {path} has {shown}; use one of {known}")
    return ending


class TableWriter:
    """Write Arrow tables of one schema to ``path`` in the format its ending names.

    Use as a context manager; :meth:`write` may be called many times (streaming), and the
    file appears, atomically, when the block exits without an exception.
    """

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.schema = schema
        self.rows = 0
        self._stack = contextlib.ExitStack()
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        self._text: IO[str] | None = None

    def __enter__(self) -> TableWriter:
        tmp = self._stack.enter_context(atomic_path(self.path))
        if self.format == ".parquet":
            self._parquet = self._stack.enter_context(
                pq.ParquetWriter(tmp, self.schema, compression="zstd")
            )
        elif self.format == ".csv":
            self._csv = self._stack.enter_context(pacsv.CSVWriter(tmp, _csv_schema(self.schema)))
        else:
            self._text = self._stack.enter_context(tmp.open("w", encoding="utf-8"))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._stack.__exit__(kind, exc, tb)

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        if self._parquet is not None:
            self._parquet.write_table(table)
        elif self._csv is not None:
            self._csv.write_table(_csv_table(table))
        elif self._text is not None:
            for line in _json_lines(table):
                self._text.write(line + "\n")
        self.rows += table.num_rows


def write_table(table: pa.Table | pd.DataFrame, path: str | os.PathLike[str]) -> int:
    """Write one table (or a DataFrame, index dropped) to ``path``; returns the row count."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with TableWriter(path, table.schema) as writer:
        writer.write(table)
    return writer.rows


# ---- CSV and JSON text ---------------------------------------------------------------------


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [
            pa.field(f.name, pa.string()) if _is_list(f.type) or _is_float32(f.type) else f
            for f in schema
        ]
    )


def _is_float32(t: pa.DataType) -> bool:
    return pa.types.is_float32(t)


def _csv_table(table: pa.Table) -> pa.Table:
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if _is_list(field.type) or _is_float32(field.type):
            column = pa.array(_json_cells(column), pa.string())
        elif pa.types.is_timestamp(field.type) and field.type.tz is not None:
            column = pc.cast(column, pa.timestamp(field.type.unit, "UTC"))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=_csv_schema(table.schema))


def _json_cells(column: pa.ChunkedArray) -> list[str | None]:
    """Each cell of a list or float32 column as JSON text (None for a null cell)."""
    return [None if v is None else _json_value(v, column.type) for v in _cells(column)]


def _cells(column: pa.ChunkedArray) -> Iterator[Any]:
    for chunk in column.chunks:
        if _is_list(chunk.type) and _is_float32(chunk.type.value_type):
            flat = chunk.flatten().to_numpy(zero_copy_only=False).astype(str)
            offsets = chunk.offsets.to_numpy()
            valid = chunk.is_valid().to_numpy(zero_copy_only=False)
            for i in range(len(chunk)):
                yield flat[offsets[i] : offsets[i + 1]] if valid[i] else None
        else:
            yield from chunk.to_pylist()


def _json_value(value: Any, kind: pa.DataType) -> str:
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":  # float32 text, shortest
        return (
            "[" + ", ".join(v if v not in ("nan", "inf", "-inf") else "null" for v in value) + "]"
        )
    if _is_float32(kind):
        text = str(np.float32(value))
        return "null" if text in _NON_FINITE else text
    return json.dumps(value, default=_json_default, allow_nan=False)


_NON_FINITE = frozenset({"nan", "inf", "-inf"})


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _json_lines(table: pa.Table) -> Iterator[str]:
    names = [json.dumps(n) for n in table.schema.names]
    texts: list[list[str]] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if _is_list(field.type) or _is_float32(field.type):
            texts.append([c if c is not None else "null" for c in _json_cells(column)])
        else:
            texts.append([_plain_json(v) for v in column.to_pylist()])
    for row in zip(*texts, strict=True):
        yield "{" + ", ".join(f"{n}: {v}" for n, v in zip(names, row, strict=True)) + "}"


def _plain_json(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return json.dumps(value, default=_json_default, allow_nan=False)
