"""The explorer's library side without a server: spectrograms, WAV windows of registered
clips (policy and content checks), metadata alignment and the map cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from hear_features.audio import SAMPLE_RATE, windows_at
from hear_features.audio.sources import AudioSources
from hear_features.clips import content_hash
from hear_features.errors import MapError, SourceChangedError, SourceMovedError, SourceRefused
from hear_features.explorer.clip_audio import ClipAudio, RegisteredClip, wav_bytes
from hear_features.explorer.embedding_map import (
    MapMethod,
    MapStore,
    align_column,
    load_map,
    project,
)
from hear_features.explorer.spectrogram import hz_to_mel, log_mel, spectrogram_png
from hear_features.featurestore.online.scan import VectorSnapshot
from tests.conftest import noise, tone

# ---- spectrograms ------------------------------------------------------------------------


def test_spectrogram_of_a_tone_peaks_in_its_mel_band() -> None:
    db = log_mel(tone(1000.0, 2.0, SAMPLE_RATE))
    assert db.shape == (64, 198)
    assert db.max() == 0.0 and db.min() >= -80.0
    band = int(np.argmax(db.mean(axis=1)))
    expected = hz_to_mel(1000.0) / hz_to_mel(8000.0) * 65 - 1  # band centres over 0-8 kHz
    assert abs(band - expected) <= 1


def test_spectrogram_png_is_an_image_with_low_frequencies_at_the_bottom() -> None:
    png = spectrogram_png(tone(300.0, 2.0, SAMPLE_RATE))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (198, 64)
    rows = np.asarray(image.convert("L"), dtype=float).mean(axis=1)
    assert rows[-16:].mean() > rows[:16].mean() + 50  # the 300 Hz energy is near the bottom
    silent = Image.open(io.BytesIO(spectrogram_png(np.zeros(32_000, np.float32))))
    assert silent.size == (198, 64)


def test_spectrogram_refuses_a_clip_shorter_than_one_frame() -> None:
    with pytest.raises(ValueError, match="at least 400"):
        log_mel(np.zeros(100, np.float32))


# ---- clip windows from registered files ---------------------------------------------------------


def registered(path: Path, offset_s: float, clip_id: str = "clip-1") -> RegisteredClip:
    return RegisteredClip(clip_id, str(path), offset_s, content_hash(path))


def test_window_is_what_the_encoder_saw_and_plays_as_2_s_wav(tmp_path: Path) -> None:
    path = tmp_path / "rec.flac"
    x = noise(5.0, 44_100, amplitude=0.2, seed=3)
    sf.write(path, x, 44_100)
    clip = registered(path, 1.8)
    window = ClipAudio(AudioSources()).window(clip)
    (expected,) = windows_at(path, [round(1.8 * SAMPLE_RATE)])
    np.testing.assert_array_equal(window, expected.samples)
    data, rate = sf.read(io.BytesIO(wav_bytes(window)), dtype="float32")
    assert rate == SAMPLE_RATE and len(data) == 32_000
    np.testing.assert_allclose(data, np.clip(window, -1, 1), atol=1 / 32_000)


def test_moved_changed_and_outside_files_are_refused_by_name(tmp_path: Path) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    path = inside / "rec.wav"
    sf.write(path, noise(3.0, SAMPLE_RATE, seed=1), SAMPLE_RATE)
    clip = registered(path, 0.0)
    reader = ClipAudio(AudioSources.from_roots([inside]))
    assert reader.window(clip).shape == (32_000,)

    outside = tmp_path / "outside.wav"
    sf.write(outside, noise(3.0, SAMPLE_RATE, seed=2), SAMPLE_RATE)
    with pytest.raises(SourceRefused, match="outside the configured audio roots"):
        reader.window(registered(outside, 0.0))
    link = inside / "link.wav"
    link.symlink_to(outside)
    with pytest.raises(SourceRefused, match="outside the configured audio roots"):
        reader.window(registered(link, 0.0))
    with pytest.raises(SourceRefused, match="scheme 'http'"):
        reader.window(RegisteredClip("c", "http://example.org/a.wav", 0.0, "0" * 64))

    # Same size, same modification time, other bytes: the hash cache must not hide it.
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-100:] = bytes(100)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    with pytest.raises(SourceChangedError, match="changed since clip clip-1 was registered"):
        reader.window(clip)

    path.rename(inside / "elsewhere.wav")
    with pytest.raises(SourceMovedError, match="moved or deleted"):
        reader.window(clip)


# ---- the map -------------------------------------------------------------------------------------


def two_clusters(n: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, 512))
    return np.vstack([c + 0.05 * rng.standard_normal((n // 2, 512)) for c in centres]).astype(
        np.float32
    )


def test_pca_map_separates_clusters_inside_the_unit_square() -> None:
    xy = project(two_clusters(), MapMethod.pca)
    assert xy.shape == (60, 2) and xy.dtype == np.float32
    assert xy.min() == 0.0 and xy.max() == 1.0
    first, second = xy[:30, 0], xy[30:, 0]
    assert first.max() < second.min() or second.max() < first.min()
    assert project(np.zeros((0, 512), np.float32), MapMethod.pca).shape == (0, 2)
    np.testing.assert_array_equal(project(two_clusters()[:1], MapMethod.pca), [[0.5, 0.5]])


def test_umap_needs_enough_points() -> None:
    with pytest.raises(MapError, match="at least 10"):
        project(two_clusters()[:5], MapMethod.umap)


def test_metadata_columns_line_up_with_the_map() -> None:
    ids = np.array([3, 5, 9, 12])
    text = align_column(ids, np.array([12, 3, 5, 40]), ["b", "a", "b", "stray"])
    assert text.categories == ["a", "b"]
    assert text.codes is not None and text.codes.tolist() == [0, 1, -1, 1]
    numbers = align_column(ids, np.array([9, 5]), [1.5, 2.0])
    assert numbers.values is not None
    np.testing.assert_array_equal(numbers.values, [np.nan, 2.0, 1.5, np.nan])


def test_map_store_computes_once_per_generation_and_shares_through_disk(tmp_path: Path) -> None:
    vectors = two_clusters()
    generation = {"now": 7}
    reads = []

    def snapshot() -> VectorSnapshot:
        reads.append(generation["now"])
        ids = np.arange(100, 100 + len(vectors), dtype=np.int64)
        return VectorSnapshot(generation["now"], ids, [f"clip-{i}" for i in ids], vectors)

    first = MapStore(tmp_path, snapshot, lambda: generation["now"])
    made = first.get_or_compute(MapMethod.pca)
    assert (made.generation, len(made), reads) == (7, 60, [7])
    assert made.entity_ids[0] == "clip-100"
    assert first.get_or_compute(MapMethod.pca) is made and reads == [7]

    # Another worker finds it on disk: no second computation.
    second = MapStore(tmp_path, snapshot, lambda: generation["now"])
    loaded = second.get_or_compute(MapMethod.pca)
    assert reads == [7]
    np.testing.assert_array_equal(loaded.xy, made.xy)
    assert str(second.status(MapMethod.umap)) == "missing"

    # A write to the store makes it stale; the old file goes once the new one exists.
    generation["now"] = 8
    assert second.cached(MapMethod.pca) is None
    assert second.get_or_compute(MapMethod.pca).generation == 8 and reads == [7, 8]
    files = sorted(p.name for p in tmp_path.glob("map-pca-*.npz"))
    assert files == ["map-pca-000000000008.npz"]
    assert load_map(tmp_path / files[0]).method is MapMethod.pca
