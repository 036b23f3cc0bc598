"""The online store's feature encoding: every Feast value survives a round trip."""

from __future__ import annotations

from feast.protos.feast.types.Value_pb2 import FloatList, StringList
from feast.protos.feast.types.Value_pb2 import Map as MapProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from hear_features.featurestore.online import codec as feature_codec

VALUES = {
    "label": ValueProto(string_val="cough"),
    "offset_s": ValueProto(double_val=1.8),
    "gain": ValueProto(float_val=0.25),
    "rate": ValueProto(int32_val=16_000),
    "frames": ValueProto(int64_val=2**40),
    "clean": ValueProto(bool_val=True),
    "missing": ValueProto(),
    "vector": ValueProto(float_list_val=FloatList(val=[0.5, -1.25, 3.0])),
    "tags": ValueProto(string_list_val=StringList(val=["a", "b"])),
}


def test_feast_values_round_trip() -> None:
    assert feature_codec.decode(feature_codec.encode_protos(VALUES)) == VALUES


def test_plain_rows_encode_like_protos() -> None:
    names = ["label", "offset_s", "rate", "missing", "tags"]
    tags = ["s", "d", "i", "s", "p"]
    (blob,) = feature_codec.encode_rows(names, tags, [("cough", 1.8, 16_000, None, VALUES["tags"])])
    decoded = feature_codec.decode(blob)
    assert decoded == {name: VALUES[name] for name in names}


def test_only_wanted_features_are_decoded() -> None:
    blob = feature_codec.encode_protos(VALUES)
    assert set(feature_codec.decode(blob, ["label", "rate", "absent"])) == {"label", "rate"}


def test_rows_of_earlier_versions_still_read() -> None:
    legacy = MapProto(val={"label": VALUES["label"], "rate": VALUES["rate"]}).SerializeToString()
    assert feature_codec.decode(legacy) == {"label": VALUES["label"], "rate": VALUES["rate"]}


def test_attributes_are_the_filterable_scalars() -> None:
    attributes = dict(
        (name, (text, num)) for name, text, num in feature_codec.attributes_of(VALUES)
    )
    assert attributes["label"] == ("cough", None)
    assert attributes["rate"] == (None, 16_000.0) and attributes["clean"] == (None, 1.0)
    assert "vector" not in attributes and "missing" not in attributes
