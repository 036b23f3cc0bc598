"""``--out`` writes Parquet, CSV or JSON lines by the file's ending, the same table in each,
and refuses any other ending before doing any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hear_features.cli import app
from hear_features.errors import ConfigError
from hear_features.outputs import output_format, write_table
from hear_features.timestamps import parse_timestamps
from tests.conftest import WriteAudio, noise

runner = CliRunner()


def sample_table() -> pa.Table:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 512)).astype(np.float32)
    return pa.table(
        {
            "clip_id": ["a", "b", 'c,"quoted"'],
            "event_timestamp": pa.array(
                parse_timestamps(["2024-03-01T12:00:00Z", "1999-12-31T23:59:59.5Z", "2024-03-03"]),
                pa.timestamp("us", tz="UTC"),
            ),
            "label": ["cough", None, "breath"],
            "distance": [0.25, None, 1.0],
            "rms_db": pa.array([-25.6, -60.125, None], pa.float32()),
            "embedding": pa.array([vectors[0], None, vectors[2]], pa.list_(pa.float32())),
        }
    )


def read_back(path: Path) -> pd.DataFrame:
    """The file as a DataFrame with embeddings as float32 arrays and timestamps in UTC."""
    if path.suffix == ".parquet":
        frame = pq.read_table(path).to_pandas()
    else:
        frame = (
            pd.read_csv(path, keep_default_na=False, na_values=[""])
            if path.suffix == ".csv"
            else pd.read_json(path, lines=True, dtype=False, convert_dates=False)
        )
        frame["event_timestamp"] = parse_timestamps(frame["event_timestamp"])
        frame["embedding"] = [
            json.loads(v) if isinstance(v, str) else v for v in frame["embedding"]
        ]
    frame["embedding"] = [
        np.asarray(v, np.float32) if isinstance(v, list | np.ndarray) else None
        for v in frame["embedding"]
    ]
    return frame


@pytest.mark.parametrize("ending", [".parquet", ".csv", ".jsonl"])
def test_every_format_holds_the_same_table(tmp_path: Path, ending: str) -> None:
    table = sample_table()
    path = tmp_path / f"out{ending}"
    assert write_table(table, path) == 3
    got = read_back(path)
    want = table.to_pandas()
    assert got["clip_id"].tolist() == want["clip_id"].tolist()
    assert got["label"].where(got["label"].notna(), None).tolist() == ["cough", None, "breath"]
    assert list(got["event_timestamp"]) == list(want["event_timestamp"])
    np.testing.assert_array_equal(got["distance"].to_numpy(float), [0.25, np.nan, 1.0])
    np.testing.assert_array_equal(
        got["rms_db"].to_numpy(np.float32), np.array([-25.6, -60.125, np.nan], np.float32)
    )
    # float32 embeddings come back bit for bit, whatever the format
    for g, w in zip(got["embedding"], want["embedding"], strict=True):
        if w is None:
            assert g is None
        else:
            np.testing.assert_array_equal(g, np.asarray(w, np.float32))


def test_jsonl_is_one_valid_json_object_per_row(tmp_path: Path) -> None:
    write_table(sample_table(), tmp_path / "o.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["clip_id"] for r in rows] == ["a", "b", 'c,"quoted"']
    assert rows[1]["embedding"] is None and rows[1]["distance"] is None
    assert rows[0]["event_timestamp"] == "2024-03-01T12:00:00+00:00"
    assert len(rows[0]["embedding"]) == 512


@pytest.mark.parametrize("name", ["x.txt", "x.parq", "x", "x.json", "x.csv.gz"])
def test_other_endings_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"use one of \.parquet, \.csv, \.jsonl"):
        output_format(tmp_path / name)
    with pytest.raises(ConfigError):
        write_table(sample_table(), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_endings_are_case_insensitive() -> None:
    assert output_format("A.CSV") == ".csv"
    assert output_format("b.Parquet") == ".parquet"


@pytest.mark.parametrize("ending", [".csv", ".jsonl"])
def test_embed_writes_the_format_its_out_ending_names(
    tmp_path: Path, write_audio: WriteAudio, standin_dir: Path, ending: str
) -> None:
    audio = write_audio("one.wav", noise(3.0, 16_000, seed=2), 16_000)
    parquet, other = tmp_path / "e.parquet", tmp_path / f"e{ending}"
    for out in (parquet, other):
        result = runner.invoke(app, ["embed", str(audio), "-o", str(out), "-m", str(standin_dir)])
        assert result.exit_code == 0, result.output
    want = pq.read_table(parquet).to_pandas()
    got = (
        pd.read_csv(other)
        if ending == ".csv"
        else pd.read_json(other, lines=True, dtype=False, convert_dates=False)
    )
    assert got["clip_id"].tolist() == want["clip_id"].tolist()
    vectors = [
        np.asarray(json.loads(v) if isinstance(v, str) else v, np.float32) for v in got["embedding"]
    ]
    np.testing.assert_array_equal(np.stack(vectors), np.stack(want["embedding"]))


def test_embed_refuses_an_unknown_ending_before_loading_anything(
    tmp_path: Path, write_audio: WriteAudio
) -> None:
    audio = write_audio("one.wav", noise(1.0, 16_000), 16_000)
    out = tmp_path / "e.txt"
    result = runner.invoke(app, ["embed", str(audio), "-o", str(out), "-m", "no/such-model"])
    assert result.exit_code == 2
    assert "ending '.txt'" in result.output and ".parquet, .csv, .jsonl" in result.output
    assert not out.exists()
