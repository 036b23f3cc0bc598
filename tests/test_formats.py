"""Every claimed format, written here by the real encoders and decoded back; WAVs with
placeholder sizes; uploads from memory; folder discovery by ending."""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hear_features.audio import (
    SAMPLE_RATE,
    WindowConfig,
    iter_blocks,
    iter_windows,
    probe,
    read_all,
)
from hear_features.audio.formats import AUDIO_EXTENSIONS, LIBSNDFILE_EXTENSIONS
from hear_features.audio.writers import write_audio
from hear_features.clips import discover_audio
from hear_features.errors import AudioError
from tests.conftest import noise, tone


def dominant_hz(x: np.ndarray) -> float:
    seg = x[len(x) // 4 : 3 * len(x) // 4]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    return float(np.fft.rfftfreq(len(seg), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def stereo_tone(sr: int = 44_100, seconds: float = 3.0) -> np.ndarray:
    x = tone(1000, seconds, sr)
    return np.stack([x, x], axis=1)


@pytest.mark.parametrize("ending", sorted(AUDIO_EXTENSIONS))
def test_every_claimed_ending_decodes_to_16k_mono(tmp_path: Path, ending: str) -> None:
    path = write_audio(tmp_path / f"tone{ending}", stereo_tone(), 44_100)
    info = probe(path)
    assert info.library == ("libsndfile" if ending in LIBSNDFILE_EXTENSIONS else "ffmpeg")
    x = read_all(path)
    assert x.dtype == np.float32 and x.ndim == 1
    # Codec delay and padding (AAC priming, AMR frames) add a few tens of ms at most.
    assert abs(len(x) - 3 * SAMPLE_RATE) < 0.06 * SAMPLE_RATE
    assert dominant_hz(x) == pytest.approx(1000, abs=5)
    assert 0.3 < np.sqrt(np.mean(x[4000:-4000] ** 2)) * np.sqrt(2) < 0.6


def test_ogg_opus_under_an_ogg_ending_is_read_by_libsndfile(tmp_path: Path) -> None:
    opus = write_audio(tmp_path / "voice.opus", tone(440, 2.0, 48_000), 48_000)
    renamed = opus.rename(tmp_path / "voice.ogg")
    info = probe(renamed)
    assert (info.library, info.subtype) == ("libsndfile", "OPUS")
    assert dominant_hz(read_all(renamed)) == pytest.approx(440, abs=5)


def test_apple_lossless_m4a_gives_the_samples_of_the_same_wav(tmp_path: Path) -> None:
    x = noise(2.5, 44_100, amplitude=0.2)
    alac = write_audio(tmp_path / "phone.m4a", x, 44_100, codec="alac")
    wav = write_audio(tmp_path / "same.wav", x, 44_100)
    assert probe(alac).subtype == "alac"
    # Both are 16-bit PCM underneath; FFmpeg and libsndfile may round the last bit apart.
    np.testing.assert_allclose(read_all(alac), read_all(wav), atol=2 / 32768)


# ---- WAVs whose size fields are placeholders -------------------------------------------


def wav_with_sizes(x: np.ndarray, sr: int, riff: int | None, data: int | None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    raw = bytearray(buf.getvalue())
    at = raw.index(b"data")
    if riff is not None:
        raw[4:8] = struct.pack("<I", riff)
    if data is not None:
        raw[at + 4 : at + 8] = struct.pack("<I", data)
    return bytes(raw)


@pytest.mark.parametrize(
    ("riff", "data"),
    [
        (None, 0),
        (None, 0x7FFFFFFF),
        (None, 0xFFFFFFFF),
        (0, 0),
        (0x7FFFFFFF, 0x7FFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0, None),
    ],
    ids=[
        "data=0",
        "data=7fffffff",
        "data=ffffffff",
        "both=0",
        "both=7fffffff",
        "both=ffffffff",
        "riff=0",
    ],
)
def test_streaming_recorder_wavs_are_read_whole(
    tmp_path: Path, riff: int | None, data: int | None
) -> None:
    x = noise(3.3, 22_050, amplitude=0.2)
    clean = tmp_path / "clean.wav"
    clean.write_bytes(wav_with_sizes(x, 22_050, None, None))
    odd = tmp_path / "recorder.wav"
    odd.write_bytes(wav_with_sizes(x, 22_050, riff, data))
    expected = read_all(clean)
    # Every sample is there, whichever library read it (data=0 goes to FFmpeg).
    np.testing.assert_array_equal(read_all(odd), expected)
    got = [(w.start, w.samples) for w in iter_windows(odd)]
    want = [(w.start, w.samples) for w in iter_windows(clean)]
    assert [s for s, _ in got] == [s for s, _ in want] == [0, 28_800]
    for (_, a), (_, b) in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_wav_really_cut_short_is_still_refused(tmp_path: Path) -> None:
    whole = wav_with_sizes(noise(2.0, 16_000), 16_000, None, None)
    path = tmp_path / "cut.wav"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AudioError, match="is truncated"):
        read_all(path)


def test_a_wav_with_no_samples_and_size_zero_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "none.wav"
    path.write_bytes(wav_with_sizes(np.zeros(0, np.float32), 16_000, None, 0))
    with pytest.raises(AudioError, match="holds no audio samples"):
        read_all(path)


# ---- FFmpeg-only formats: streaming, truncation, uploads -------------------------------


def test_ffmpeg_decoding_streams_in_bounded_blocks(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.webm", noise(60.0, 48_000, amplitude=0.2), 48_000)
    sizes = [len(b) for b in iter_blocks(path, block_seconds=0.5)]
    assert sum(sizes) == pytest.approx(60 * SAMPLE_RATE, abs=0.03 * SAMPLE_RATE)
    # At most half a second plus one 20 ms Opus frame, converted to 16 kHz.
    assert max(sizes) <= 0.5 * SAMPLE_RATE + 0.02 * SAMPLE_RATE + 64
    assert len(sizes) >= 100


def test_a_cut_off_raw_aac_stream_is_refused_with_its_position(tmp_path: Path) -> None:
    data = write_audio(tmp_path / "a.aac", noise(10.0, 16_000), 16_000).read_bytes()
    cut = tmp_path / "cut.aac"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cannot be decoded after [3-6]\.\d\d s") as info:
        read_all(cut)
    assert str(cut) in str(info.value)


@pytest.mark.parametrize("ending", [".webm", ".m4a"])
def test_uploads_decode_from_memory_like_files(tmp_path: Path, ending: str) -> None:
    path = write_audio(tmp_path / f"upload{ending}", noise(2.5, 48_000, amplitude=0.2), 48_000)
    buffer = io.BytesIO(path.read_bytes())
    buffer.name = f"phone{ending}"
    np.testing.assert_array_equal(read_all(buffer), read_all(path))


@pytest.mark.parametrize(
    "data", [b"hello\n" * 100, b"\x89PNG\r\n\x1a\n" + bytes(500), b"RIFF\x00\x00"]
)
def test_errors_about_uploads_name_the_upload_not_the_buffer(data: bytes) -> None:
    buffer = io.BytesIO(data)
    buffer.name = "cough from the clinic.wav"
    with pytest.raises(AudioError) as info:
        read_all(buffer)
    message = str(info.value)
    assert message.startswith("cough from the clinic.wav: ")
    assert "BytesIO" not in message and " at 0x" not in message


# ---- folder discovery -----------------------------------------------------------------


def test_folders_yield_every_claimed_ending_and_report_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = tone(500, 0.5, 16_000)
    for ending in AUDIO_EXTENSIONS:
        write_audio(tmp_path / f"a{ending}", x, 16_000)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "more.txt").write_text("x")
    (tmp_path / "old.wma").write_bytes(b"x")
    (tmp_path / "README").write_text("x")
    with caplog.at_level(logging.WARNING, logger="hear_features.clips"):
        found, problems = discover_audio([str(tmp_path)])
    assert sorted(p.suffix for p in found) == sorted(AUDIO_EXTENSIONS)
    assert problems == []
    assert "skipped 2 .txt, 1 (none), 1 .wma" in caplog.text


def test_a_folder_without_audio_is_a_problem_that_says_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "a.wma").write_bytes(b"x")
    (tmp_path / "b.wma").write_bytes(b"x")
    _, problems = discover_audio([str(tmp_path)])
    assert [p.problem for p in problems] == [
        "folder holds no audio files (skipped 2 .wma (not an audio file ending))"
    ]


def test_upper_case_endings_count(tmp_path: Path) -> None:
    write_audio(tmp_path / "LOUD.webm", tone(500, 0.5, 16_000), 16_000).rename(
        tmp_path / "LOUD.WEBM"
    )
    found, _ = discover_audio([str(tmp_path / "*.WEBM")])
    assert [p.name for p in found] == ["LOUD.WEBM"]
    assert [w.offset_s for w in iter_windows(found[0], WindowConfig())] == [0.0]


# ---- a decoder that delivers fewer frames than the header promised --------------------------


def mp3_bytes(tmp_path: Path, seconds: float = 6.0) -> bytes:
    x = noise(seconds, 44_100, amplitude=0.2, seed=8)
    return write_audio(tmp_path / "whole.mp3", x, 44_100).read_bytes()


def test_an_mp3_cut_in_half_is_refused_not_padded(tmp_path: Path) -> None:
    # Its Xing header still declares 6 s; soundfile's blocks() used to hand out the
    # unfilled rest of its buffer (zeros or stale memory) as the missing 3 s.
    path = tmp_path / "cut.mp3"
    path.write_bytes(mp3_bytes(tmp_path)[:50_000])
    with pytest.raises(AudioError, match=r"is truncated: the header declares 264600 frames"):
        read_all(path)


def test_an_mp3_a_little_shorter_than_its_header_gives_only_real_samples(tmp_path: Path) -> None:
    whole = mp3_bytes(tmp_path)
    full = read_all(tmp_path / "whole.mp3")
    path = tmp_path / "short.mp3"
    path.write_bytes(whole[: len(whole) - 1_000])  # about 0.1 s of frames missing
    x = read_all(path)
    assert 5.7 * SAMPLE_RATE < len(x) < len(full)
    # The decoded part is the same audio, and nothing after it was invented.
    np.testing.assert_allclose(x[: len(x) - 2000], full[: len(x) - 2000], atol=1e-4)
    assert np.sqrt(np.mean(x[-2000:] ** 2)) > 0.05
