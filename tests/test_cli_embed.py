"""``hear-features embed`` and ``make-standin`` through the real typer app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

from hear_features.audio.windows import remove_dc
from hear_features.cli import app
from hear_features.encoders import HearEncoder
from hear_features.encoders.resolve import local_model
from tests.conftest import WriteAudio, noise

runner = CliRunner()


def test_make_standin_writes_a_loadable_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["make-standin", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "stand-in encoder, not HeAR" in result.output
    assert HearEncoder(local_model(tmp_path / "m"), device="cpu").is_standin
    again = runner.invoke(app, ["make-standin", str(tmp_path / "m")])
    assert again.exit_code == 1 and "already exists" in again.output


def test_embed_writes_one_row_per_window_and_reports_bad_files(
    tmp_path: Path, write_audio: WriteAudio, standin_dir: Path, encoder: HearEncoder
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "a.wav", noise(7.3, 44_100), 44_100)
    sf.write(folder / "b.mp3", noise(1.0, 22_050, seed=2), 22_050)
    (folder / "broken.flac").write_bytes(b"fLaC but not really")
    out = tmp_path / "emb.parquet"

    result = runner.invoke(
        app, ["embed", str(folder), "--out", str(out), "--model", str(standin_dir)]
    )

    assert result.exit_code == 1, result.output  # one input failed
    assert "broken.flac" in result.output and "not a readable audio file" in result.output
    table = pq.read_table(out)
    assert table.num_rows == 4 + 1
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.schema.field("created").type == pa.timestamp("us", tz="UTC")
    assert set(table.column("model_id").to_pylist()) == {"hear-features/standin@v1-seed0"}
    rows = table.to_pylist()
    a_rows = [r for r in rows if r["audio_uri"].endswith("a.wav")]
    assert [r["offset_s"] for r in a_rows] == pytest.approx([0, 1.8, 3.6, 5.4])
    assert len({r["clip_id"] for r in rows}) == 5
    assert all(len(r["embedding"]) == 512 for r in rows)


def test_embedded_vectors_match_a_direct_encoder_call(
    tmp_path: Path, write_audio: WriteAudio, standin_dir: Path, encoder: HearEncoder
) -> None:
    x = noise(2.0, 16_000, seed=5)
    path = write_audio("one.wav", x, 16_000, "FLOAT")
    out = tmp_path / "e.parquet"
    result = runner.invoke(app, ["embed", str(path), "-o", str(out), "-m", str(standin_dir)])
    assert result.exit_code == 0, result.output
    stored = np.asarray(pq.read_table(out).column("embedding").to_pylist()[0], np.float32)
    # The encoder sees the window with its DC offset removed (README, "Audio handling").
    np.testing.assert_allclose(stored, encoder.encode(remove_dc(x)[None, :])[0], atol=1e-5)


def test_same_audio_gets_the_same_clip_ids_wherever_it_lives(
    tmp_path: Path, standin_dir: Path
) -> None:
    for name in ("x/first.wav", "y/second.wav"):
        (tmp_path / name).parent.mkdir()
        sf.write(tmp_path / name, noise(3.0, 16_000, seed=9), 16_000)
    out = tmp_path / "e.parquet"
    result = runner.invoke(
        app,
        ["embed", str(tmp_path / "x"), str(tmp_path / "y"), "-o", str(out), "-m", str(standin_dir)],
    )
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    first = [r["clip_id"] for r in rows if "first" in r["audio_uri"]]
    second = [r["clip_id"] for r in rows if "second" in r["audio_uri"]]
    assert first == second and len(first) == 2


def test_nothing_to_embed_is_an_error(tmp_path: Path, standin_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "embed",
            str(tmp_path / "nothing*.wav"),
            "-o",
            str(tmp_path / "o.parquet"),
            "-m",
            str(standin_dir),
        ],
    )
    assert result.exit_code == 1
    assert "pattern matches no audio files" in result.output
    assert not (tmp_path / "o.parquet").exists()


def test_failed_run_leaves_an_existing_output_untouched(tmp_path: Path, standin_dir: Path) -> None:
    out = tmp_path / "o.parquet"
    out.write_bytes(b"previous results")
    result = runner.invoke(
        app, ["embed", str(tmp_path / "a.wav"), "-o", str(out), "-m", "/does/not/exist"]
    )
    assert result.exit_code == 1
    assert out.read_bytes() == b"previous results"


def test_bad_window_setting_is_a_clear_error(
    tmp_path: Path, write_audio: WriteAudio, standin_dir: Path
) -> None:
    path = write_audio("a.wav", noise(1, 16_000), 16_000)
    result = runner.invoke(
        app, ["embed", str(path), "-o", str(tmp_path / "o.parquet"), "--mode", "chunks"]
    )
    assert result.exit_code == 2
    assert "window mode must be 'fixed' or 'event'" in result.output


# VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forked parent (pytest).
PEAK_RSS = (
    "print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')).replace("
    "'VmHWM:', 'PEAK_KIB').replace('kB', ''))"
)


def peak_rss_mib(code: str) -> float:
    """Run ``code`` in a fresh interpreter and return its own peak resident memory."""
    proc = subprocess.run(
        [sys.executable, "-c", code + "\n" + PEAK_RSS], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PEAK_KIB"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def hour_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "hour.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=44_100, channels=1, format="FLAC") as f:
        for _ in range(60):
            f.write((0.05 * rng.standard_normal(60 * 44_100)).astype(np.float32))
    return path


def test_one_hour_recording_is_read_in_blocks(hour_file: Path) -> None:
    """The audio front-end alone: one hour at 16 kHz float32 would be 220 MiB."""
    peak = peak_rss_mib(
        "from hear_features.audio import iter_windows\n"
        f"n = sum(1 for _ in iter_windows({str(hour_file)!r}))\n"
        "assert n == 2000, n"
    )
    assert peak < 150, f"audio front-end peaked at {peak:.0f} MiB"


def test_one_hour_recording_is_embedded_in_bounded_memory(
    tmp_path: Path, hour_file: Path, standin_dir: Path
) -> None:
    """The whole embed command, TensorFlow included, stays under 1.25 GiB.

    Measured: 870-990 MiB alone or beside busy loops, up to 1,100 MiB while the test
    suite's other worker runs TensorFlow and Feast processes (TensorFlow's own
    allocations are most of it). Decoding the hour whole would add 635 MiB (44.1 kHz
    float32) to that, which this bound still catches."""
    out = tmp_path / "hour.parquet"
    argv = ["hear-features", "embed", str(hour_file), "-o", str(out), "-m", str(standin_dir)]
    peak = peak_rss_mib(
        f"import sys; sys.argv = {argv!r}\n"
        "from hear_features.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code"
    )
    assert pq.read_metadata(out).num_rows == 2000
    assert peak < 1280, f"embed peaked at {peak:.0f} MiB"
