"""Which features of a vector view metadata filters may name, and filters checked
against them before any search runs.

Without this check a filter on a misspelt field (``gendre``) matches no stored row, and a
filter on a number written as text (``"age": "40"``) compares text with numbers: both
answer "nothing found" or, under ``ne``/``nin``, "everything", and the caller cannot
tell. :func:`check_filters` refuses an unknown field with :class:`FilterError` naming it
and listing the fields there are, and converts each value to its field's type:

- text fields take text (a number is read as its text: ``5`` -> ``"5"``) and only
  equality and membership (``eq ne in nin``): ``"100" < "20"`` as text;
- number fields take numbers or text that reads as a finite number;
- boolean fields take ``true``/``false`` (also ``yes/no``, ``1/0`` as text or number),
  and only equality and membership. They are stored as the numbers 1 and 0 in the
  attribute table, so the checked filter compares numbers.

The one place searches check filters: :meth:`HearOnlineStore.search
<hear_features.featurestore.online.store.HearOnlineStore.search>`, under every search
path (the search service, the API, Feast's ``retrieve_online_documents_v2``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

from feast import FeatureView
from feast.filter_models import ComparisonFilter, CompoundFilter
from feast.value_type import ValueType

from hear_features.errors import FilterError
from hear_features.featurestore.online.rows import vector_field

Kind = Literal["text", "number", "bool"]
Filter = ComparisonFilter | CompoundFilter

_KINDS: Final[dict[ValueType, Kind]] = {
    ValueType.STRING: "text",
    ValueType.INT32: "number",
    ValueType.INT64: "number",
    ValueType.FLOAT: "number",
    ValueType.DOUBLE: "number",
    ValueType.BOOL: "bool",
}
_ORDER: Final = ("gt", "gte", "lt", "lte")
_MEMBERSHIP: Final = ("in", "nin")
_TRUE: Final = frozenset({"true", "t", "yes", "y", "1"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "0"})

_CACHE: dict[int, tuple[FeatureView, dict[str, Kind]]] = {}


def filter_fields(view: FeatureView) -> dict[str, Kind]:
    """The scalar features of ``view`` a filter may name, with their kind (in view order;
    the vector and non-scalar features excluded). Cached per view object."""
    cached = _CACHE.get(id(view))
    if cached is not None and cached[0] is view:
        return cached[1]
    vector = vector_field(view)
    fields: dict[str, Kind] = {}
    for field in view.features:
        if vector is not None and field.name == vector.name:
            continue
        kind = _KINDS.get(field.dtype.to_value_type())
        if kind is not None:
            fields[field.name] = kind
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[id(view)] = (view, fields)
    return fields


def check_view_filters(view: FeatureView, filters: Filter | None) -> Filter | None:
    """``filters`` checked against ``view``'s scalar features and converted to their
    types (:func:`check_filters`)."""
    return check_filters(filters, filter_fields(view), view.name)


def check_filters(filters: Filter | None, fields: dict[str, Kind], view: str) -> Filter | None:
    """``filters`` with every field known and every value of its field's type, or
    :class:`FilterError` naming what is wrong (and the fields there are)."""
    if filters is None:
        return None
    if isinstance(filters, CompoundFilter):
        if not filters.filters:
            raise FilterError(f"an '{filters.type}' filter needs at least one filter in it")
        return CompoundFilter(
            type=filters.type, filters=[_checked(f, fields, view) for f in filters.filters]
        )
    if isinstance(filters, ComparisonFilter):
        return _comparison(filters, fields, view)
    raise FilterError(
        f"filters must be Feast ComparisonFilter or CompoundFilter objects, "
        f"not {type(filters).__name__}"
    )


def _checked(f: Any, fields: dict[str, Kind], view: str) -> Filter:
    checked = check_filters(f, fields, view)
    assert checked is not None
    return checked


def _comparison(f: ComparisonFilter, fields: dict[str, Kind], view: str) -> ComparisonFilter:
    kind = fields.get(f.key)
    if kind is None:
        raise FilterError(
            f"unknown filter field {f.key!r}: the feature view {view} has no such feature "
            f"(filterable fields: {', '.join(fields)})"
        )
    if f.type in _ORDER and kind != "number":
        raise FilterError(
            f"filter {f.key} {f.type} {f.value!r}: {f.key} holds "
            f"{'text' if kind == 'text' else 'booleans'}; use eq, ne, in or nin"
        )
    if f.type in _MEMBERSHIP:
        values = f.value if isinstance(f.value, list | tuple | set) else [f.value]
        converted: Any = [_value(v, kind, f.key) for v in values]
    elif isinstance(f.value, list | tuple | set | dict):
        raise FilterError(f"filter {f.key} {f.type} takes one value, got {f.value!r}")
    else:
        converted = _value(f.value, kind, f.key)
    return ComparisonFilter(type=f.type, key=f.key, value=converted)


def _value(value: Any, kind: Kind, key: str) -> str | float:
    if kind == "text":
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else str(value)
        raise FilterError(f"filter on {key}: {value!r} is not text ({key} holds text)")
    if kind == "number":
        number: float | None = None
        try:
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                number = float(value)
        except (ValueError, OverflowError):  # "abc"; an integer beyond float's range
            number = None
        if number is None or not math.isfinite(number):
            shown = f"{str(value)[:40]}..." if len(str(value)) > 40 else repr(value)
            raise FilterError(
                f"filter on {key}: {shown} is not a finite number ({key} holds numbers)"
            )
        return number
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and value in (0, 1):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return float(value.strip().lower() in _TRUE)
    raise FilterError(f"filter on {key}: {value!r} is not true or false ({key} holds booleans)")


_OPS: dict[str, Any] = {
    "==": "eq",
    "!=": "ne",
    "<": "lt",
    "<=": "lte",
    ">": "gt",
    ">=": "gte",
    "in": "in",
    "not in": "nin",
}


def filters_from_where(conditions: Sequence[str]) -> Filter | None:
    """``--where COLUMN OP VALUE`` conditions (the grammar of
    :mod:`hear_features.where`, joined with AND) as a Feast filter; the search
    checks the columns and converts the values to their types."""
    from hear_features.where import parse

    parts: list[Filter] = []
    for text in conditions:
        cond = parse(text)
        many = cond.op in ("in", "not in")
        value = list(cond.values) if many else cond.values[0]
        parts.append(ComparisonFilter(type=_OPS[cond.op], key=cond.column, value=value))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else CompoundFilter(type="and", filters=parts)
