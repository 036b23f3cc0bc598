"""How the online store keeps an entity's features: compact JSON of plain values.

Feast hands the online store ``ValueProto`` messages, but building and parsing protobuf
messages costs a couple of microseconds per value, which dominated materialisation of
large views. Scalars are therefore stored as ``[tag, value]`` pairs in one JSON object
(``s`` string, ``d`` double, ``f`` float, ``i`` int32, ``l`` int64, ``b`` bool, ``n``
null); any other Feast type keeps its exact protobuf bytes (``p``, base64). Values are
turned back into ``ValueProto`` only for the features a reader asks for.

Blobs start with ``J``; anything else is read as a serialized ``feast.types.Map`` (the
layout of earlier versions of this store).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from feast.protos.feast.types.Value_pb2 import Map as MapProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType

from hear_features.json_text import loads

PREFIX = b"J"
#: (name, text, number): what a metadata filter compares against.
Attribute = tuple[str, str | None, float | None]

_TAG_OF_FIELD = {
    "string_val": "s",
    "double_val": "d",
    "float_val": "f",
    "int32_val": "i",
    "int64_val": "l",
    "bool_val": "b",
}
_FIELD_OF_TAG = {tag: field for field, tag in _TAG_OF_FIELD.items()}
#: Feast scalar types and their tags, for writers that hold plain values.
TAG_OF_TYPE = {
    ValueType.STRING: "s",
    ValueType.DOUBLE: "d",
    ValueType.FLOAT: "f",
    ValueType.INT32: "i",
    ValueType.INT64: "l",
    ValueType.BOOL: "b",
}


def encode_protos(features: dict[str, ValueProto]) -> bytes:
    """Encode Feast values (the generic write path)."""
    doc: dict[str, list[Any]] = {}
    for name, value in features.items():
        kind = value.WhichOneof("val")
        if kind is None:
            doc[name] = ["n", None]
        elif kind in _TAG_OF_FIELD:
            doc[name] = [_TAG_OF_FIELD[kind], getattr(value, kind)]
        else:
            doc[name] = ["p", base64.b64encode(value.SerializeToString()).decode()]
    return _dump(doc)


def encode_rows(
    names: Sequence[str], tags: Sequence[str], rows: Iterable[Sequence[Any]]
) -> list[bytes]:
    """Encode plain values column by column (the fast write path).

    ``tags[i]`` is the tag of column ``i``; a ``p`` column holds ``ValueProto`` messages.
    """
    out = []
    for row in rows:
        doc: dict[str, list[Any]] = {}
        for name, tag, value in zip(names, tags, row, strict=True):
            if value is None:
                doc[name] = ["n", None]
            elif tag == "p":
                doc[name] = ["p", base64.b64encode(value.SerializeToString()).decode()]
            else:
                doc[name] = [tag, value]
        out.append(_dump(doc))
    return out


def decode(blob: bytes, wanted: Iterable[str] | None = None) -> dict[str, ValueProto]:
    """The stored features (only ``wanted`` ones, when given) as Feast values."""
    keep = _names(wanted)
    if not blob.startswith(PREFIX):
        legacy = MapProto()
        legacy.ParseFromString(blob)
        return {k: v for k, v in legacy.val.items() if keep is None or k in keep}
    out: dict[str, ValueProto] = {}
    for name, (tag, value) in loads(blob[1:]).items():
        if keep is not None and name not in keep:
            continue
        if tag == "n":
            out[name] = ValueProto()
        elif tag == "p":
            proto = ValueProto()
            proto.ParseFromString(base64.b64decode(value))
            out[name] = proto
        else:
            out[name] = ValueProto(**{_FIELD_OF_TAG[tag]: value})
    return out


def decode_plain(blob: bytes, wanted: Iterable[str] | None = None) -> dict[str, Any]:
    """The stored features as plain Python values, for callers that would only convert
    Feast values back (the HTTP API): no protobuf message is built for scalars."""
    keep = _names(wanted)
    if not blob.startswith(PREFIX):
        return {name: python_value(v) for name, v in decode(blob, keep).items()}
    out: dict[str, Any] = {}
    for name, (tag, value) in loads(blob[1:]).items():
        if keep is not None and name not in keep:
            continue
        if tag == "p":
            proto = ValueProto()
            proto.ParseFromString(base64.b64decode(value))
            out[name] = python_value(proto)
        else:
            out[name] = value  # "n" stores None
    return out


def python_value(value: ValueProto) -> Any:
    """A Feast value as plain Python (lists as lists, a missing value as None)."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    converted = feast_value_type_to_python_type(value)
    return converted.tolist() if isinstance(converted, np.ndarray) else converted


def attributes_of(features: dict[str, ValueProto]) -> list[Attribute]:
    """The filterable (name, text, number) triples of Feast values."""
    out: list[Attribute] = []
    for name, value in features.items():
        kind = value.WhichOneof("val")
        if kind == "string_val":
            out.append((name, value.string_val, None))
        elif kind in ("int32_val", "int64_val", "float_val", "double_val", "bool_val"):
            out.append((name, None, float(getattr(value, kind))))
    return out


def _names(wanted: Iterable[str] | None) -> frozenset[str] | set[str] | None:
    """``wanted`` as a set (kept as it is when it already is one: readers pass one set
    for many rows)."""
    if not wanted:
        return None
    return wanted if isinstance(wanted, frozenset | set) else set(wanted)


def _dump(doc: dict[str, list[Any]]) -> bytes:
    return PREFIX + json.dumps(doc, separators=(",", ":")).encode()
