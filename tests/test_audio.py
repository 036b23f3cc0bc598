"""Decoding, resampling, windowing and bad-audio handling on real files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hear_features.audio import (
    CLIP_SAMPLES,
    SAMPLE_RATE,
    AudioLimits,
    WindowConfig,
    clip_from_samples,
    iter_blocks,
    iter_windows,
    pick_events,
    probe,
    read_all,
)
from hear_features.audio.windows import fixed_windows, frame_levels
from hear_features.errors import AudioError
from hear_features.synthetic import cough
from tests.conftest import WriteAudio, noise, tone


def dominant_hz(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    seg = x[len(x) // 4 : 3 * len(x) // 4]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    return float(np.fft.rfftfreq(len(seg), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_every_format_decodes_to_16k_mono(write_audio: WriteAudio, ext: str) -> None:
    path = write_audio(f"tone.{ext}", tone(1000, 3.0, 44_100), 44_100)
    x = read_all(path)
    assert x.dtype == np.float32 and x.ndim == 1
    # Lossy codecs add encoder delay/padding of a few ms at most.
    assert abs(len(x) - 3 * SAMPLE_RATE) < 0.06 * SAMPLE_RATE
    assert dominant_hz(x) == pytest.approx(1000, abs=5)
    assert 0.3 < np.sqrt(np.mean(x[4000:-4000] ** 2)) * np.sqrt(2) < 0.6


@pytest.mark.parametrize("sr", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_any_rate_is_resampled_and_a_tone_keeps_its_pitch(write_audio: WriteAudio, sr: int) -> None:
    path = write_audio(f"tone_{sr}.wav", tone(1000, 2.5, sr), sr)
    x = read_all(path)
    assert abs(len(x) - 2.5 * SAMPLE_RATE) <= 2
    assert dominant_hz(x) == pytest.approx(1000, abs=2)


def test_stereo_is_averaged_to_mono(write_audio: WriteAudio) -> None:
    left = tone(440, 1.0, 16_000, amplitude=0.8)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    x = read_all(write_audio("stereo.wav", stereo, 16_000, "FLOAT"))
    np.testing.assert_allclose(x, left / 2, atol=1e-6)


def test_integer_and_float_samples_share_one_scale(write_audio: WriteAudio) -> None:
    signal = tone(300, 1.0, 16_000, amplitude=0.5)
    ints = read_all(write_audio("int.wav", signal, 16_000, "PCM_16"))
    floats = read_all(write_audio("float.wav", signal, 16_000, "FLOAT"))
    np.testing.assert_allclose(ints, floats, atol=1e-4)


def test_file_objects_decode_like_paths(write_audio: WriteAudio) -> None:
    path = write_audio("buf.flac", noise(1.5, 22_050), 22_050)
    buffer = io.BytesIO(path.read_bytes())
    buffer.name = "upload.flac"
    np.testing.assert_array_equal(read_all(buffer), read_all(path))


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0.5, [0.0]), (2.0, [0.0]), (7.3, [0.0, 1.8, 3.6, 5.4])]
)
def test_window_counts_and_offsets(
    write_audio: WriteAudio, seconds: float, expected: list[float]
) -> None:
    path = write_audio("n.wav", noise(seconds, 16_000), 16_000)
    windows = list(iter_windows(path))
    assert [w.offset_s for w in windows] == pytest.approx(expected)
    assert all(
        w.samples.shape == (CLIP_SAMPLES,) and w.samples.dtype == np.float32 for w in windows
    )
    # The tail is zero-padded, never wrapped or stretched.
    last = windows[-1]
    real = round(seconds * SAMPLE_RATE) - round(last.offset_s * SAMPLE_RATE)
    if real < CLIP_SAMPLES:
        assert not last.samples[real:].any()
        assert last.samples[real - 100 : real].any()


def test_hop_is_configurable(write_audio: WriteAudio) -> None:
    path = write_audio("n.wav", noise(6.0, 16_000), 16_000)
    offsets = [w.offset_s for w in iter_windows(path, WindowConfig(hop_s=1.0))]
    assert offsets == pytest.approx([0, 1, 2, 3, 4])


def test_windowing_does_not_depend_on_block_size(write_audio: WriteAudio) -> None:
    path = write_audio("n.ogg", noise(9.1, 48_000, seed=3), 48_000)
    config = WindowConfig(hop_s=1.3, min_rms_db=None)
    small = list(fixed_windows(iter_blocks(path, block_seconds=0.37), config))
    large = list(fixed_windows(iter_blocks(path, block_seconds=20.0), config))
    assert [w.start for w in small] == [w.start for w in large]
    for a, b in zip(small, large, strict=True):
        np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)


def test_quiet_windows_are_skipped_unless_kept(write_audio: WriteAudio) -> None:
    x = np.concatenate(
        [noise(2, 16_000), np.zeros(4 * 16_000, np.float32), noise(2, 16_000, seed=1)]
    )
    path = write_audio("gappy.wav", x, 16_000, "FLOAT")
    loud = [w.offset_s for w in iter_windows(path, WindowConfig(hop_s=2.0))]
    every = [w.offset_s for w in iter_windows(path, WindowConfig(hop_s=2.0, min_rms_db=None))]
    assert loud == [0.0, 6.0]
    assert every == [0.0, 2.0, 4.0, 6.0]


def test_pure_silence_gives_no_windows_by_default(write_audio: WriteAudio) -> None:
    path = write_audio("silence.wav", np.zeros(3 * 16_000, np.float32), 16_000)
    assert list(iter_windows(path)) == []


def burst_track(centres: list[float], seconds: float, sr: int = 16_000) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = 0.001 * rng.standard_normal(int(seconds * sr))
    n = int(0.25 * sr)
    for c in centres:
        s = int(c * sr) - n // 2
        x[s : s + n] += 0.4 * rng.standard_normal(n) * np.hanning(n)
    return x.astype(np.float32)


def test_event_picker_centres_windows_on_bursts(write_audio: WriteAudio) -> None:
    centres = [1.5, 4.2, 9.0, 13.75]
    path = write_audio("bursts.flac", burst_track(centres, 16.0, 44_100), 44_100)
    windows = list(iter_windows(path, WindowConfig(mode="event")))
    found = [w.offset_s + 1.0 for w in windows]
    assert found == pytest.approx(centres, abs=0.03)


def test_event_window_near_the_edges_stays_inside_the_recording(write_audio: WriteAudio) -> None:
    path = write_audio("edges.wav", burst_track([0.3, 5.8], 6.0), 16_000)
    offsets = [w.offset_s for w in iter_windows(path, WindowConfig(mode="event"))]
    assert offsets == pytest.approx([0.0, 4.0])


def test_long_loud_region_is_split_into_two_second_events() -> None:
    levels = np.full(1000, -80.0)
    levels[100:700] = -10.0  # 6 s of sound
    events = pick_events(levels, 1000 * 160, WindowConfig(mode="event"))
    assert len(events) == 3
    assert all(e.end - e.start <= CLIP_SAMPLES + 400 for e in events)


def test_event_picker_ignores_clicks_and_merges_close_bursts() -> None:
    levels = np.full(500, -70.0)
    levels[50:52] = -5.0  # 20 ms click: dropped
    levels[200:220] = -10.0
    levels[230:250] = -10.0  # 100 ms gap: merged with the previous burst
    events = pick_events(levels, 500 * 160, WindowConfig(mode="event"))
    assert len(events) == 1
    assert events[0].start == 200 * 160


def test_frame_levels_measure_dbfs() -> None:
    levels, total = frame_levels([tone(1000, 1.0, 16_000, amplitude=1.0)])
    assert total == 16_000
    assert np.median(levels) == pytest.approx(-3.01, abs=0.05)


# ---- bad audio: each class raises AudioError naming the file and the problem ----


def _wav_bytes(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _flac_bytes(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC")
    return buf.getvalue()


BAD_FILES = {
    "empty.wav": (lambda: b"", "empty"),
    "text.wav": (lambda: b"this is a text file, not audio\n" * 40, "not a readable audio file"),
    "png.mp3": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(500), "not a readable audio file"),
    "cut_header.wav": (
        lambda: _wav_bytes(noise(1, 16_000), 16_000)[:30],
        "not a readable audio file",
    ),
    "cut_data.wav": (lambda: _wav_bytes(noise(2, 16_000), 16_000)[:20_000], "truncated"),
    "cut.flac": (lambda: _flac_bytes(noise(3, 16_000), 16_000)[:9_000], "truncated or corrupt"),
    "nan.wav": (
        lambda: _wav_bytes(
            np.where(np.arange(16_000) == 8_000, np.nan, 0.1).astype(np.float32), 16_000, "FLOAT"
        ),
        "NaN or infinite samples (first at 0.500 s)",
    ),
    "inf.wav": (
        lambda: _wav_bytes(np.full(16_000, np.inf, np.float32), 16_000, "FLOAT"),
        "NaN or infinite samples",
    ),
    "no_samples.wav": (lambda: _wav_bytes(np.zeros(0, np.float32), 16_000), "no audio samples"),
    "rate_1000.wav": (
        lambda: _wav_bytes(noise(1, 1_000), 1_000),
        "unsupported sample rate of 1000 Hz",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_audio_raises_one_clear_error(tmp_path: Path, name: str) -> None:
    make, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(AudioError) as info:
        list(iter_windows(path))
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_too_long_is_refused_before_decoding(write_audio: WriteAudio) -> None:
    path = write_audio("long.wav", noise(5, 16_000), 16_000)
    with pytest.raises(AudioError, match="is 5 s long; the limit is 3 s"):
        probe(path, AudioLimits(max_duration_s=3))


def test_too_many_channels_is_refused(write_audio: WriteAudio) -> None:
    path = write_audio("multi.wav", np.zeros((1600, 8), np.float32) + 0.1, 16_000)
    with pytest.raises(AudioError, match="has 8 channels; at most 4"):
        probe(path, AudioLimits(max_channels=4))


def test_eight_channels_at_192k_is_accepted(write_audio: WriteAudio) -> None:
    x = np.repeat(tone(1000, 1.0, 192_000)[:, None], 8, axis=1)
    y = read_all(write_audio("8ch.wav", x, 192_000))
    assert abs(len(y) - SAMPLE_RATE) <= 2 and dominant_hz(y) == pytest.approx(1000, abs=2)


def test_missing_file_and_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        probe(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        probe(tmp_path)


def test_symlink_loop_is_reported(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(AudioError, match="symbolic links") as info:
        probe(a)
    assert str(a) in str(info.value)


# ---- levels on the real, DC-free signal ----------------------------------------------


def at_dbfs(x: np.ndarray, db: float) -> np.ndarray:
    """``x`` scaled to an RMS level of ``db`` dBFS."""
    return (x * 10 ** (db / 20) / np.sqrt(np.mean(np.square(x, dtype=np.float64)))).astype(
        np.float32
    )


def spoken_word(sr: int, seconds: float = 0.4, seed: int = 4) -> np.ndarray:
    """A voiced, word-like burst: harmonics under a smooth envelope."""
    t = np.arange(round(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * 140 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    return np.asarray(x * np.hanning(len(t)))


def test_a_quiet_short_word_is_measured_on_its_own_samples(write_audio: WriteAudio) -> None:
    # 0.4 s at -45 dBFS: -52 dBFS if the 1.6 s of zero padding were counted.
    path = write_audio("digit.wav", at_dbfs(spoken_word(8_000), -45.0), 8_000, "FLOAT")
    windows = list(iter_windows(path))
    assert [w.offset_s for w in windows] == [0.0]
    assert windows[0].length == pytest.approx(0.4 * SAMPLE_RATE, abs=2)
    assert windows[0].rms_db == pytest.approx(-45.0, abs=0.3)
    assert not windows[0].samples[windows[0].length :].any()  # padding stays zero


def test_padding_does_not_dilute_the_level_of_a_tail_window(write_audio: WriteAudio) -> None:
    x = at_dbfs(noise(2.6, 16_000, seed=2), -30.0)
    windows = list(iter_windows(write_audio("tail.wav", x, 16_000, "FLOAT")))
    assert [w.offset_s for w in windows] == [0.0, 1.8]
    assert windows[1].length == round(0.8 * SAMPLE_RATE)
    assert windows[1].rms_db == pytest.approx(-30.0, abs=0.5)


@pytest.mark.parametrize("mode", ["fixed", "event"])
@pytest.mark.parametrize("offset", [0.05, -0.2])
def test_near_silence_on_a_dc_offset_is_refused_like_silence(
    write_audio: WriteAudio, mode: str, offset: float
) -> None:
    hiss = at_dbfs(noise(6.0, 16_000, seed=5), -70.0) + np.float32(offset)
    path = write_audio("dc_hiss.wav", hiss, 16_000, "FLOAT")
    assert list(iter_windows(path, WindowConfig(mode=mode))) == []  # type: ignore[arg-type]
    kept = list(iter_windows(path, WindowConfig(mode="fixed", min_rms_db=None)))
    assert all(w.rms_db == pytest.approx(-70.0, abs=1.0) for w in kept)


def dc_pair(write_audio: WriteAudio, sr: int, offset: float = 0.05) -> tuple[Path, Path]:
    x = cough(np.random.default_rng(3), sr, subject=1, seconds=2.5).astype(np.float32)
    return (
        write_audio("clean.wav", x, sr, "FLOAT"),
        write_audio("dc.wav", x + np.float32(offset), sr, "FLOAT"),
    )


@pytest.mark.parametrize("mode", ["fixed", "event"])
@pytest.mark.parametrize("sr", [16_000, 44_100])
def test_a_dc_shifted_cough_gives_the_clips_of_the_clean_one(
    write_audio: WriteAudio, mode: str, sr: int
) -> None:
    clean_path, dc_path = dc_pair(write_audio, sr)
    config = WindowConfig(mode=mode)  # type: ignore[arg-type]
    clean = list(iter_windows(clean_path, config))
    shifted = list(iter_windows(dc_path, config))
    assert clean, "the cough must give at least one clip"
    assert [w.start for w in shifted] == [w.start for w in clean]
    for a, b in zip(shifted, clean, strict=True):
        assert a.rms_db == pytest.approx(b.rms_db, abs=0.01)
        if sr == SAMPLE_RATE:  # resampling leaves a few ms of ringing at the offset's edges
            np.testing.assert_allclose(a.samples, b.samples, atol=1e-5)


@pytest.mark.parametrize("sr", [16_000, 44_100])
def test_a_dc_shifted_cough_embeds_like_the_clean_one(
    write_audio: WriteAudio,
    encoder,  # type: ignore[no-untyped-def]
    sr: int,
) -> None:
    clean_path, dc_path = dc_pair(write_audio, sr)
    clean = np.stack([w.samples for w in iter_windows(clean_path)])
    shifted = np.stack([w.samples for w in iter_windows(dc_path)])
    a, b = encoder.encode(clean), encoder.encode(shifted)
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.9999


def test_request_samples_lose_their_dc_like_file_windows() -> None:
    x = cough(np.random.default_rng(3), 22_050, subject=0, seconds=1.5).astype(np.float32)
    clean = clip_from_samples(x, 22_050)
    shifted = clip_from_samples(x + np.float32(0.1), 22_050)
    np.testing.assert_allclose(shifted, clean, atol=1e-5)
    real = round(1.5 * SAMPLE_RATE)
    assert abs(float(clean[:real].mean())) < 1e-6
    assert not clean[real + 1 :].any()


def test_frame_levels_ignore_a_dc_offset() -> None:
    x = tone(300, 1.0, 16_000, amplitude=0.1)
    clean, _ = frame_levels([x])
    shifted, _ = frame_levels([x + np.float32(0.3)])
    np.testing.assert_allclose(shifted, clean, atol=0.05)
