"""One timestamp parser for register, training-set and the API: each value on its own,
naive values are UTC, the same result in any row order, and messages that name the value."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from hear_features.api.models import EntityRow
from pydantic import ValidationError

from hear_features.errors import TimestampError
from hear_features.featurestore.registration import read_manifest
from hear_features.featurestore.training import validate_entities
from hear_features.timestamps import parse_timestamp, parse_timestamps
from tests.conftest import hear_cli, make_repo, noise

UTC = dt.UTC


def datetimes(series: pd.Series) -> list[dt.datetime]:
    return [t.to_pydatetime() for t in series]


# A column that mixes offsets and naive values; pandas' format="ISO8601" reads the naive
# ones with the previous row's offset, so they moved with the row order.
MIXED = [
    ("2024-03-01T12:00:00+05:00", dt.datetime(2024, 3, 1, 7, 0, tzinfo=UTC)),
    ("2024-03-01T12:00:00", dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)),
    ("2024-03-01 12:00:00-08:00", dt.datetime(2024, 3, 1, 20, 0, tzinfo=UTC)),
    ("2024-03-02", dt.datetime(2024, 3, 2, tzinfo=UTC)),
    ("2024-03-01T12:00:00Z", dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)),
    ("2024-03-01T12:00:00.250+01:00", dt.datetime(2024, 3, 1, 11, 0, 0, 250_000, tzinfo=UTC)),
]


def test_each_value_is_read_on_its_own_and_naive_means_utc() -> None:
    parsed = parse_timestamps([text for text, _ in MIXED])
    assert str(parsed.dtype) == "datetime64[us, UTC]"
    assert datetimes(parsed) == [want for _, want in MIXED]


def test_the_result_does_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(0)
    want = {text: expected for text, expected in MIXED}
    for _ in range(20):
        order = rng.permutation(len(MIXED))
        texts = [MIXED[i][0] for i in order]
        got = datetimes(parse_timestamps(texts))
        assert {t: g for t, g in zip(texts, got, strict=True)} == want


def test_date_time_objects_and_timestamp_columns() -> None:
    naive = pd.Series(pd.to_datetime(["2024-01-01 00:00", "2024-01-02 06:30"]))
    aware = pd.Series(pd.to_datetime(["2024-01-01T00:00+02:00", "2024-01-02T00:00+02:00"]))
    assert list(parse_timestamps(naive).astype(str)) == [
        "2024-01-01 00:00:00+00:00",
        "2024-01-02 06:30:00+00:00",
    ]
    assert list(parse_timestamps(aware).astype(str)) == [
        "2023-12-31 22:00:00+00:00",
        "2024-01-01 22:00:00+00:00",
    ]
    objects = [dt.datetime(2024, 5, 1, 9), dt.date(2024, 5, 2), np.datetime64("2024-05-03T01:02")]
    assert datetimes(parse_timestamps(objects)) == [
        dt.datetime(2024, 5, 1, 9, tzinfo=UTC),
        dt.datetime(2024, 5, 2, tzinfo=UTC),
        dt.datetime(2024, 5, 3, 1, 2, tzinfo=UTC),
    ]


def test_old_and_far_future_dates_are_not_cut_off_at_pandas_nanosecond_limits() -> None:
    parsed = parse_timestamps(["1850-06-01", "2400-01-01T00:00:00+01:00"])
    assert list(parsed.astype(str)) == ["1850-06-01 00:00:00+00:00", "2399-12-31 23:00:00+00:00"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("last tuesday", r"'last tuesday' is not an ISO 8601 date/time$"),
        ("2024-13-45", r"'2024-13-45' is not an ISO 8601 date/time \(month must be in 1\.\.12\)"),
        (1_700_000_000, r"1700000000 is a number, not a date/time"),
        (None, r"None is empty"),
        ("  ", r"'  ' is empty"),
        (float("nan"), r"nan is empty"),
        (
            "2030-01-01T00:00+99:00",
            r"'2030-01-01T00:00\+99:00' is not an ISO 8601 date/time \(its UTC offset must be "
            r"between -23:59 and \+23:59\)$",
        ),
        ("0001-01-01T00:00+05:00", r"'0001-01-01T00:00\+05:00' is outside the years 1 to 9999"),
        ("9999-12-31T23:00-05:00", r"'9999-12-31T23:00-05:00' is outside the years 1 to 9999"),
    ],
)
def test_a_bad_value_is_named_with_its_row(value: object, message: str) -> None:
    with pytest.raises(TimestampError, match=r"^entities\.csv, row 3: event_timestamp " + message):
        parse_timestamps(["2024-01-01", value], where=lambda i: f"entities.csv, row {i + 2}")


def test_single_values_for_command_line_options() -> None:
    assert parse_timestamp("2024-03-01T12:00", "--timestamp") == dt.datetime(
        2024, 3, 1, 12, tzinfo=UTC
    )
    with pytest.raises(TimestampError, match=r"--timestamp 'yesterday' is not an ISO 8601"):
        parse_timestamp("yesterday", "--timestamp")


# ---- the three users: register, training-set, the API ---------------------------------------


def test_manifests_read_mixed_offsets_the_same_in_any_order(tmp_path: Path) -> None:
    for i in range(len(MIXED)):
        sf.write(tmp_path / f"r{i}.wav", noise(0.5, 16_000, seed=i), 16_000)
    rows = [f"r{i}.wav,{text}" for i, (text, _) in enumerate(MIXED)]
    forward = tmp_path / "forward.csv"
    forward.write_text("path,event_timestamp\n" + "\n".join(rows) + "\n")
    backward = tmp_path / "backward.csv"
    backward.write_text("path,event_timestamp\n" + "\n".join(reversed(rows)) + "\n")
    want = {f"r{i}.wav": expected for i, (_, expected) in enumerate(MIXED)}
    for manifest in (forward, backward):
        got = {r.path.name: r.event_timestamp for r in read_manifest(manifest, {})}
        assert got == want


def test_register_stores_what_the_manifest_says(tmp_path: Path, standin_dir: Path) -> None:
    repo = make_repo(tmp_path / "repo", standin_dir)
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(3):
        sf.write(audio / f"r{i}.wav", noise(0.5, 16_000, seed=i), 16_000)
    rows = [f"r{i}.wav,{text}" for i, (text, _) in enumerate(MIXED[:3])]
    (audio / "m.csv").write_text("path,event_timestamp\n" + "\n".join(reversed(rows)) + "\n")
    proc = hear_cli("register", str(audio / "m.csv"), "--repo", str(repo))
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(repo / "data" / "registrations.parquet").to_pandas()
    got = {
        Path(u).name: t.to_pydatetime()
        for u, t in zip(table.audio_uri, table.event_timestamp, strict=True)
    }
    assert got == {f"r{i}.wav": MIXED[i][1] for i in range(3)}


def test_training_set_entities_read_mixed_offsets_the_same_in_any_order() -> None:
    frame = pd.DataFrame(
        {"clip_id": [f"c{i}" for i in range(len(MIXED))], "event_timestamp": [t for t, _ in MIXED]}
    )
    forward = validate_entities(frame)
    backward = validate_entities(frame.iloc[::-1].reset_index(drop=True))
    as_dict = lambda f: dict(zip(f.clip_id, f.event_timestamp, strict=True))  # noqa: E731
    assert as_dict(forward) == as_dict(backward)
    assert as_dict(forward)["c1"] == pd.Timestamp("2024-03-01T12:00:00Z")
    assert str(forward.event_timestamp.dtype) == "datetime64[us, UTC]"
    with pytest.raises(TimestampError, match=r"entities, row 2: event_timestamp 'soon'"):
        validate_entities(
            pd.DataFrame({"clip_id": ["a", "b"], "event_timestamp": ["2024-01-01", "soon"]})
        )


def test_api_entity_rows_use_the_same_parser() -> None:
    row = EntityRow(clip_id="c", event_timestamp="2024-03-01T12:00:00")
    assert row.event_timestamp == dt.datetime(2024, 3, 1, 12, tzinfo=UTC)
    with pytest.raises(ValidationError, match=r"event_timestamp 1700000000 is a number"):
        EntityRow(clip_id="c", event_timestamp=1_700_000_000)
