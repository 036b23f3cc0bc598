"""Feast metadata filters as SQL over a view's attribute table (id, name, text, num).

The answer, a set of ids, becomes a FAISS ID selector: filtered search never leaves
SQLite for the metadata and never scans vectors that cannot pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from feast.filter_models import ComparisonFilter, CompoundFilter, FilterTranslator, FilterType

#: Terms per ``IN`` list or compound query: SQLite accepts at most 500 in one compound SELECT.
SQL_TERMS = 500


class AttributeFilter(FilterTranslator):
    """Feast metadata filters -> a SQL query returning the ids that pass them.

    Strings compare as text, numbers as numbers; ``ne`` and ``nin`` also keep rows that
    lack the attribute. ``and`` intersects, ``or`` unites.
    """

    def __init__(self, table: str, attrs: str) -> None:
        self.table = table
        self.attrs = attrs

    def translate(self, filters: FilterType) -> tuple[str, list[Any]]:
        if filters is None:
            return f'SELECT id FROM "{self.table}"', []
        return self._dispatch(filters)

    def translate_comparison(self, f: ComparisonFilter) -> tuple[str, list[Any]]:
        if f.type in ("in", "nin"):
            values = list(f.value) if isinstance(f.value, list | tuple | set) else [f.value]
            union, params = self._one_of(f.key, values)
            return (union, params) if f.type == "in" else self._negate(union, params)
        if f.type == "eq":
            return self._equals(f.key, f.value)
        if f.type == "ne":
            return self._negate(*self._equals(f.key, f.value))
        op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[f.type]
        column = "num" if _is_number(f.value) else "text"
        value = float(f.value) if column == "num" else str(f.value)
        return f'SELECT id FROM "{self.attrs}" WHERE name = ? AND {column} {op} ?', [f.key, value]

    def translate_compound(self, f: CompoundFilter) -> tuple[str, list[Any]]:
        parts = [self._dispatch(child) for child in f.filters]
        if not parts:
            return f'SELECT id FROM "{self.table}"', []
        glue = " INTERSECT " if f.type == "and" else " UNION "
        return glue.join(f"SELECT id FROM ({sql})" for sql, _ in parts), [
            x for _, ps in parts for x in ps
        ]

    def _equals(self, key: str, value: Any) -> tuple[str, list[Any]]:
        if _is_number(value):
            return f'SELECT id FROM "{self.attrs}" WHERE name = ? AND num = ?', [key, float(value)]
        return f'SELECT id FROM "{self.attrs}" WHERE name = ? AND text = ?', [key, str(value)]

    def _one_of(self, key: str, values: list[Any]) -> tuple[str, list[Any]]:
        """Rows whose attribute ``key`` is any of ``values``: one ``IN`` list per column
        (not one SELECT per value: SQLite allows at most 500 terms in a compound query)."""
        numbers = [float(v) for v in values if _is_number(v)]
        texts = [str(v) for v in values if not _is_number(v)]
        parts: list[str] = []
        params: list[Any] = []
        for column, group in (("num", numbers), ("text", texts)):
            for chunk in chunked(group):
                marks = ",".join("?" * len(chunk))
                where = f"name = ? AND {column} IN ({marks})"
                parts.append(f'SELECT id FROM "{self.attrs}" WHERE {where}')
                params += [key, *chunk]
        if not parts:
            return f'SELECT id FROM "{self.attrs}" WHERE 0', []
        return " UNION ".join(parts), params

    def _negate(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        return f'SELECT id FROM "{self.table}" EXCEPT SELECT id FROM ({sql})', params


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def chunked(items: list[Any], size: int = SQL_TERMS) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
