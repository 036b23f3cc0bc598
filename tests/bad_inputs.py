"""A generated corpus of bad (and merely extreme) inputs, shared by the tests and the
reliability report.

Each case builds its input from scratch in a folder it is given, so the corpus needs no
fixtures checked into the repository. ``expect`` is a regular expression the refusal
message must match; ``None`` marks an input that is extreme but valid, which must be
accepted and give a correct result.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hear_features.audio.writers import write_audio
from hear_features.synthetic import cough


@dataclass(frozen=True)
class AudioCase:
    """An audio file, fed to ``register``, ``embed`` and the upload endpoints."""

    name: str
    make: Callable[[Path], Path]
    expect: str | None  # regex of the refusal, None when the file must be accepted
    upload: bool = True  # also sent over HTTP (not for links or multi-hour files)
    # For accepted files: the same sound in a plain WAV, which must give the same clip
    # offsets and embeddings at least this close (cosine), so "accepted" means "right".
    reference: Callable[[Path], Path] | None = None
    min_cosine: float = 0.9999


def _cough(sr: int = 16_000, seconds: float = 2.5, seed: int = 1) -> np.ndarray:
    return cough(np.random.default_rng(seed), sr, subject=0, seconds=seconds).astype(np.float32)


def _wav_bytes(samples: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def _png() -> bytes:
    # A real 1x1 PNG: signature, IHDR, IDAT, IEND.
    return bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e221bc33"
        "0000000049454e44ae426082"
    )


def _corrupt_mp3(folder: Path) -> Path:
    """An MP3 whose frames after the first 10% are overwritten with random bytes."""
    data = bytearray(_wav_bytes(_cough(44_100, 6.0), 44_100, "MPEG_LAYER_III", "MP3"))
    rng = np.random.default_rng(7)
    start = len(data) // 10
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path = folder / "corrupt_frames.mp3"
    path.write_bytes(bytes(data))
    return path


def _three_hours(folder: Path) -> Path:
    """A real 3-hour FLAC (8 kHz, quiet noise: compresses to a few MB), written in blocks."""
    path = folder / "three_hours.flac"
    sr = 8_000
    rng = np.random.default_rng(3)
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
        block = (1e-3 * rng.standard_normal(sr * 600)).astype(np.float32)
        for _ in range(18):  # 18 x 10 min
            f.write(block)
    return path


def _many_channels(folder: Path) -> Path:
    sr = 192_000
    t = np.arange(sr) / sr  # 1 s: a decaying noise burst, as loud as a cough
    rng = np.random.default_rng(5)
    mono = (0.5 * np.exp(-4 * t) * rng.standard_normal(sr)).astype(np.float32)
    path = folder / "eight_channels_192k.wav"
    sf.write(path, np.repeat(mono[:, None], 8, axis=1), sr, subtype="PCM_24")
    return path


def _float_with(value: float) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        x = _cough()
        x[12_345] = value
        path = folder / f"float_{'nan' if np.isnan(value) else 'inf'}.wav"
        sf.write(path, x, 16_000, subtype="FLOAT")
        return path

    return make


def _symlink_loop(folder: Path) -> Path:
    path = folder / "loop.wav"
    path.symlink_to(path)
    return path


def _broken_link(folder: Path) -> Path:
    path = folder / "dangling.wav"
    path.symlink_to(folder / "deleted-long-ago.wav")
    return path


def _unicode_name(folder: Path) -> Path:
    path = folder / "toux sèche Ünïcode ☃ file.wav"
    sf.write(path, _cough(), 16_000)
    return path


def _clipped_noise(folder: Path) -> Path:
    rng = np.random.default_rng(11)
    x = np.clip(3.0 * rng.standard_normal(16_000 * 3), -1.0, 1.0).astype(np.float32)
    path = folder / "clipped_full_scale.wav"
    sf.write(path, x, 16_000)
    return path


def _encoded(name: str, sr: int, stereo: bool = False, **kwargs: object) -> Callable[[Path], Path]:
    """The corpus cough at ``sr``, encoded by ``name``'s ending (FFmpeg or libsndfile)."""

    def make(folder: Path) -> Path:
        x = _cough(sr)
        return write_audio(folder / name, np.stack([x, x], 1) if stereo else x, sr, **kwargs)

    return make


def _reference(sr: int) -> Callable[[Path], Path]:
    """The corpus cough at ``sr`` as a float WAV: what an accepted file must match."""

    def make(folder: Path) -> Path:
        path = folder / "reference.wav"
        sf.write(path, _cough(sr), sr, subtype="FLOAT")
        return path

    return make


def _wav_with_sizes(name: str, riff: int | None, data: int | None) -> Callable[[Path], Path]:
    """The corpus cough as a float WAV whose RIFF/data size fields hold placeholders."""

    def make(folder: Path) -> Path:
        raw = bytearray(_wav_bytes(_cough(), 16_000, "FLOAT"))
        at = raw.index(b"data")
        if riff is not None:
            raw[4:8] = riff.to_bytes(4, "little")
        if data is not None:
            raw[at + 4 : at + 8] = data.to_bytes(4, "little")
        path = folder / name
        path.write_bytes(bytes(raw))
        return path

    return make


def _dc_shifted(name: str, x: Callable[[], np.ndarray], offset: float) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        sf.write(path, x() + np.float32(offset), 16_000, subtype="FLOAT")
        return path

    return make


def _hiss_at(db: float) -> np.ndarray:
    x = np.random.default_rng(9).standard_normal(16_000 * 6)
    return (x * 10 ** (db / 20) / np.sqrt(np.mean(x**2))).astype(np.float32)


def _quiet_word(folder: Path) -> Path:
    """A 0.4 s voiced word at -45 dBFS RMS, 8 kHz (it measures -52 dBFS if padding counted)."""
    sr = 8_000
    t = np.arange(int(0.4 * sr)) / sr
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8)) * np.hanning(len(t))
    x = x * 10 ** (-45 / 20) / np.sqrt(np.mean(x**2))
    path = folder / "quiet_digit.wav"
    sf.write(path, x.astype(np.float32), sr, subtype="FLOAT")
    return path


def _cut(name: str, make_whole: Callable[[Path], Path], keep: float) -> Callable[[Path], Path]:
    """A file made by ``make_whole`` with only its first ``keep`` fraction of bytes."""

    def make(folder: Path) -> Path:
        whole = make_whole(folder)
        data = whole.read_bytes()
        whole.unlink()
        path = folder / name
        path.write_bytes(data[: int(len(data) * keep)])
        return path

    return make


def _video_only(folder: Path) -> Path:
    """An MP4 holding one second of video and no audio stream."""
    import av

    path = folder / "screen_recording.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"  # type: ignore[union-attr]
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24"
            )
            container.mux(stream.encode(frame))  # type: ignore[arg-type]
        container.mux(stream.encode(None))  # type: ignore[union-attr]
    return path


_GOOD_WAV = _wav_bytes(_cough(), 16_000)
_GOOD_FLAC = _wav_bytes(_cough(), 16_000, "PCM_16", "FLAC")

AUDIO_CASES: list[AudioCase] = [
    AudioCase("zero-byte .wav", _file("empty.wav", b""), r"is empty \(0 bytes\)"),
    AudioCase(
        "truncated WAV header (first 20 bytes)",
        _file("short_header.wav", _GOOD_WAV[:20]),
        r"not a readable audio file",
    ),
    AudioCase(
        "WAV cut off mid data chunk",
        _file("cut.wav", _GOOD_WAV[: len(_GOOD_WAV) // 2]),
        r"is truncated",
    ),
    AudioCase(
        "truncated FLAC header (first 30 bytes)",
        _file("short_header.flac", _GOOD_FLAC[:30]),
        r"not a readable audio file",
    ),
    AudioCase(
        "text renamed .wav",
        _file("notes.wav", b"patient 17: coughing since Tuesday\n" * 40),
        r"not a readable audio file",
    ),
    AudioCase("PNG image renamed .wav", _file("picture.wav", _png()), r"not a readable audio file"),
    AudioCase("corrupt MP3 frames", _corrupt_mp3, r"cannot be decoded|not a readable|corrupt"),
    AudioCase(
        "1-sample audio",
        _file("one_sample.wav", _wav_bytes(np.array([0.5], np.float32), 16_000)),
        r"too short",
    ),
    AudioCase("float WAV with NaN", _float_with(float("nan")), r"NaN or infinite samples"),
    AudioCase("float WAV with +inf", _float_with(float("inf")), r"NaN or infinite samples"),
    AudioCase(
        "pure silence (10 s of zeros)",
        _file("silence.wav", _wav_bytes(np.zeros(160_000, np.float32), 16_000)),
        r"silent|no window (above|louder)",
    ),
    AudioCase("3-hour recording", _three_hours, r"is 10800 s long; the limit is", upload=False),
    AudioCase("symbolic link loop", _symlink_loop, r"symbolic links|cannot be", upload=False),
    AudioCase("dangling symbolic link", _broken_link, r"broken symbolic link", upload=False),
    # Extreme but valid: must work, and give the same clip as the plain version would.
    AudioCase("8 channels at 192 kHz (valid)", _many_channels, None),
    AudioCase("clipped full-scale noise (valid)", _clipped_noise, None),
    AudioCase("unicode and spaces in the path (valid)", _unicode_name, None),
    # Recorded in the field: browser, phone and voice-recorder formats, streaming WAVs,
    # quiet speakers and recorders with a DC offset. Each must give the clips (and, within
    # the codec's loss, the embeddings) of the same sound in a plain WAV.
    AudioCase(
        "WebM/Opus as a browser's MediaRecorder writes it (valid)",
        _encoded("browser.webm", 48_000),
        None,
        reference=_reference(48_000),
        min_cosine=0.99,
    ),
    AudioCase(
        "M4A/AAC stereo as a phone records it (valid)",
        _encoded("phone.m4a", 44_100, stereo=True),
        None,
        reference=_reference(44_100),
        min_cosine=0.99,
    ),
    AudioCase(
        "AMR-NB voice recording, 8 kHz (valid)",
        _encoded("voice.amr", 8_000),
        None,
        reference=_reference(8_000),
        min_cosine=0.97,
    ),
    AudioCase(
        "WAV with RIFF and data sizes 0x7FFFFFFF (valid)",
        _wav_with_sizes("recorder_7fff.wav", 0x7FFFFFFF, 0x7FFFFFFF),
        None,
        reference=_reference(16_000),
    ),
    AudioCase(
        "WAV with data size 0, samples present (valid)",
        _wav_with_sizes("recorder_zero.wav", None, 0),
        None,
        reference=_reference(16_000),
    ),
    AudioCase(
        "WAV with sizes 0xFFFFFFFF (valid)",
        _wav_with_sizes("recorder_ffff.wav", 0xFFFFFFFF, 0xFFFFFFFF),
        None,
        reference=_reference(16_000),
    ),
    AudioCase("0.4 s word at -45 dBFS RMS (valid)", _quiet_word, None),
    AudioCase(
        "cough on a +0.05 DC offset (valid)",
        _dc_shifted("dc_cough.wav", _cough, 0.05),
        None,
        reference=_reference(16_000),
    ),
    # ... and what must still be refused.
    AudioCase(
        "near-silence (-70 dBFS) on a +0.05 DC offset",
        _dc_shifted("dc_hiss.wav", lambda: _hiss_at(-70.0), 0.05),
        r"silent|no window (above|louder)",
    ),
    AudioCase(
        "M4A cut in half (no index)",
        _cut("half.m4a", _encoded("whole.m4a", 44_100), 0.5),
        r"not a readable audio file",
    ),
    AudioCase(
        "MP3 cut in half (its header still declares the whole length)",
        _cut("half.mp3", _encoded("whole.mp3", 44_100), 0.5),
        r"is truncated",
    ),
    AudioCase(
        "raw AAC stream cut off",
        _cut("cut.aac", _encoded("whole.aac", 16_000), 0.6),
        r"cannot be decoded after",
    ),
    AudioCase("MP4 with video and no audio", _video_only, r"no audio stream"),
    AudioCase(
        "text renamed .webm",
        _file("notes.webm", b"patient 17: coughing since Tuesday\n" * 40),
        r"not a readable audio file",
    ),
]


@dataclass(frozen=True)
class ManifestCase:
    """A manifest for ``register``; ``make(folder, good_audio, outside_audio)``."""

    name: str
    make: Callable[[Path, Path, Path], Path]
    expect: str


def _manifest(name: str, text: Callable[[Path, Path, Path], str]) -> Callable[..., Path]:
    def make(folder: Path, good: Path, outside: Path) -> Path:
        path = folder / name
        path.write_text(text(folder, good, outside), encoding="utf-8")
        return path

    return make


def _relative_escape(folder: Path, good: Path, outside: Path) -> str:
    up = "../" * (len(folder.resolve().parts) + 2)
    return f"path,label\n{up}etc/passwd,cough\n"


MANIFEST_CASES: list[ManifestCase] = [
    ManifestCase(
        "manifest with a study column the repository does not declare",
        _manifest("undeclared.csv", lambda f, g, o: f"path,label,smoker\n{g.name},cough,yes\n"),
        r"column\(s\) smoker that the feature repository does not declare",
    ),
    ManifestCase(
        "manifest without a path column",
        _manifest("no_path.csv", lambda f, g, o: f"file,label\n{g.name},cough\n"),
        r"has no 'path' column",
    ),
    ManifestCase(
        "manifest listing one file twice with different labels",
        _manifest("twice.csv", lambda f, g, o: f"path,label\n{g.name},cough\n{g.name},breath\n"),
        r"listed twice with different metadata",
    ),
    ManifestCase(
        "manifest with a bad timestamp",
        _manifest(
            "bad_time.csv",
            lambda f, g, o: f"path,label,event_timestamp\n{g.name},cough,last tuesday\n",
        ),
        r"event_timestamp 'last tuesday' is not an ISO 8601",
    ),
    ManifestCase(
        "manifest path ../../etc/passwd",
        _manifest("escape.csv", _relative_escape),
        r"outside the configured audio roots",
    ),
    ManifestCase(
        "manifest with an absolute path outside the audio roots",
        _manifest("elsewhere.csv", lambda f, g, o: f"path,label\n{o},cough\n"),
        r"outside the configured audio roots",
    ),
    ManifestCase(
        "manifest with an https:// audio URI",
        _manifest("remote.csv", lambda f, g, o: "path,label\nhttps://example.org/c.wav,cough\n"),
        r"scheme 'https' is not allowed",
    ),
    ManifestCase(
        "manifest with an s3:// audio URI",
        _manifest("bucket.csv", lambda f, g, o: "path,label\ns3://lab-bucket/c.wav,cough\n"),
        r"scheme 's3' is not allowed",
    ),
    ManifestCase(
        "zero-byte manifest",
        _manifest("empty.csv", lambda f, g, o: ""),
        r"cannot be read",
    ),
]


@dataclass(frozen=True)
class EntityCase:
    """An entity file for ``training-set``; ``make(folder, known_clip_id)``."""

    name: str
    make: Callable[[Path, str], Path]
    expect: str


def _entities(name: str, text: Callable[[str], str]) -> Callable[[Path, str], Path]:
    def make(folder: Path, clip_id: str) -> Path:
        path = folder / name
        path.write_text(text(clip_id), encoding="utf-8")
        return path

    return make


ENTITY_CASES: list[EntityCase] = [
    EntityCase(
        "entity file without event_timestamp",
        _entities("no_ts.csv", lambda c: f"clip_id\n{c}\n"),
        r"lacks column\(s\) event_timestamp",
    ),
    EntityCase(
        "entity file with a bad timestamp",
        _entities("bad_ts.csv", lambda c: f"clip_id,event_timestamp\n{c},2024-13-45\n"),
        r"is not an ISO 8601",
    ),
    EntityCase(
        "entity file with unknown clip ids",
        _entities(
            "unknown.csv",
            lambda c: f"clip_id,event_timestamp\n{c},2030-01-01\nnot-a-clip,2030-01-01\n",
        ),
        r"unknown clip id.*not-a-clip",
    ),
    EntityCase(
        "entity file that is an image",
        lambda folder, c: _file("entities.parquet", _png())(folder),
        r"cannot be read",
    ),
]


@dataclass(frozen=True)
class RequestCase:
    """One HTTP request; ``status`` is the expected 4xx, ``expect`` a regex of its body."""

    name: str
    method: str
    url: str
    status: int
    expect: str
    json: object | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None


def request_cases(known_clip: str, dim: int = 512) -> list[RequestCase]:
    """Bad requests against a store that holds ``known_clip``."""
    good = [0.01] * dim
    nan_body = json.dumps({"vector": good, "k": 5}).replace("0.01", "NaN", 1).encode()
    huge = json.dumps({"vector": good, "k": 5, "filters": {"label": "x" * 6_000_000}}).encode()
    return [
        RequestCase(
            "vector of the wrong length",
            "POST",
            "/v1/search/vector",
            422,
            r"512",
            json={"vector": [0.1] * 100, "k": 5},
        ),
        RequestCase(
            "vector with NaN",
            "POST",
            "/v1/search/vector",
            422,
            r"finite|NaN|nan",
            content=nan_body,
            headers={"content-type": "application/json"},
        ),
        RequestCase("k = 0", "POST", "/v1/search/vector", 422, r"k", json={"vector": good, "k": 0}),
        RequestCase(
            "k negative", "POST", "/v1/search/vector", 422, r"k", json={"vector": good, "k": -3}
        ),
        RequestCase(
            "k huge", "POST", "/v1/search/vector", 422, r"k", json={"vector": good, "k": 10**12}
        ),
        RequestCase(
            "k huge on /similar", "GET", f"/v1/clips/{known_clip}/similar?k=99999999", 422, r"k"
        ),
        RequestCase(
            "filter on a field the store does not have",
            "POST",
            "/v1/search/vector",
            422,
            r"unknown filter field 'gendre'.*filterable fields: .*label",
            json={"vector": good, "k": 5, "filters": {"gendre": "f"}},
        ),
        RequestCase(
            "filter on an unknown field of /similar",
            "GET",
            f"/v1/clips/{known_clip}/similar?k=3&gendre=f",
            422,
            r"unknown filter field 'gendre'",
        ),
        RequestCase(
            "zero query vector",
            "POST",
            "/v1/search/vector",
            422,
            r"no direction",
            json={"vector": [0.0] * dim, "k": 5},
        ),
        RequestCase(
            "overflowing query vector [1e30]*512",
            "POST",
            "/v1/search/vector",
            422,
            r"overflows float32",
            json={"vector": [1e30] * dim, "k": 5},
        ),
        RequestCase("unknown clip id", "GET", "/v1/clips/not-a-clip", 404, r"not-a-clip"),
        RequestCase(
            "unknown clip id on /similar", "GET", "/v1/clips/nope-0/similar?k=3", 404, r"nope-0"
        ),
        RequestCase(
            "unknown clip ids in a training-set request",
            "POST",
            "/v1/training-set",
            404,
            r"ghost",
            json={"entities": [{"clip_id": "ghost", "event_timestamp": "2030-01-01T00:00:00Z"}]},
        ),
        RequestCase(
            "malformed JSON",
            "POST",
            "/v1/search/vector",
            422,
            r"JSON|json",
            content=b'{"vector": [0.1, 0.2',
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "huge JSON body",
            "POST",
            "/v1/search/vector",
            413,
            r"too large|limit",
            content=huge,
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "upload of zero bytes",
            "POST",
            "/v1/search/audio",
            422,
            r"empty",
            files={"file": ("empty.wav", b"", "audio/wav")},
        ),
        RequestCase(
            "upload of a text file named .wav",
            "POST",
            "/v1/search/audio",
            422,
            r"not a readable audio file",
            files={"file": ("notes.wav", b"hello\n" * 100, "audio/wav")},
        ),
        RequestCase(
            "upload over the size limit",
            "POST",
            "/v1/search/audio",
            413,
            r"too large|limit",
            files={"file": ("big.wav", b"\0" * (12 * 1024 * 1024), "audio/wav")},
        ),
        # Found by the security review (issue 13): each answered 500 before.
        RequestCase(
            "filter list of 501 values",
            "POST",
            "/v1/search/vector",
            422,
            r"filters\.label: .*at most 100 items",
            json={"vector": good, "filters": {"label": [f"v{i}" for i in range(501)]}},
        ),
        RequestCase(
            "empty filter list",
            "POST",
            "/v1/search/vector",
            422,
            r"filters\.label: .*at least 1 item",
            json={"vector": good, "filters": {"label": []}},
        ),
        RequestCase(
            "lone UTF-16 surrogate in a filter",
            "POST",
            "/v1/search/vector",
            422,
            r"filters\.label.*unicode",
            content=_with_surrogate({"vector": good, "filters": {"label": "SURROGATE"}}),
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "lone UTF-16 surrogate in a seed",
            "POST",
            "/v1/training-set",
            422,
            r"seeds\.0.*unicode",
            content=_with_surrogate({"seeds": ["SURROGATE"]}),
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "lone UTF-16 surrogate in an extra column",
            "POST",
            "/v1/training-set",
            422,
            r"entities\.0.*surrogate",
            content=_with_surrogate({"entities": [_row(known_clip, fold="SURROGATE")]}),
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "training-set extra column that is empty in every row",
            "POST",
            "/v1/training-set",
            422,
            r"extra column 'fold' has no value in any row",
            json={"entities": [_row(known_clip, fold=None)]},
        ),
        RequestCase(
            "training-set extra column named like a built-in in another case",
            "POST",
            "/v1/training-set",
            422,
            r"extra column 'Clip_ID' clashes with built-in column 'clip_id'",
            json={"entities": [_row(known_clip, Clip_ID="x")]},
        ),
        RequestCase(
            "training-set extra column holding an object",
            "POST",
            "/v1/training-set",
            422,
            r"extra column 'fold' must hold text, a number, a boolean or null, not dict",
            json={"entities": [_row(known_clip, fold={"a": 1})]},
        ),
        RequestCase(
            "training-set extra column of mixed types",
            "POST",
            "/v1/training-set",
            422,
            r"extra column 'fold' mixes float and str values \(entity row 2\)",
            json={"entities": [_row(known_clip, fold=1), _row(known_clip, fold="a")]},
        ),
        RequestCase(
            "training-set timestamp in the year 1",
            "POST",
            "/v1/training-set",
            422,
            r"event_timestamp 0001-01-01T00:00:00\+00:00 is outside the years 1678 to 2261",
            json={"entities": [{"clip_id": known_clip, "event_timestamp": "0001-01-01"}]},
        ),
        RequestCase(
            "training-set timestamp that is before the year 1 in UTC",
            "POST",
            "/v1/training-set",
            422,
            r"'0001-01-01T00:00:00\+05:00' is outside the years 1 to 9999 once converted to UTC",
            json={"entities": [_row(known_clip, event_timestamp="0001-01-01T00:00:00+05:00")]},
        ),
        RequestCase(
            "training-set timestamp with a UTC offset of 99 hours",
            "POST",
            "/v1/training-set",
            422,
            r"is not an ISO 8601 date/time \(its UTC offset must be between -23:59 and \+23:59\)",
            json={"entities": [_row(known_clip, event_timestamp="2030-01-01T00:00:00+99:00")]},
        ),
        RequestCase(
            "training-set extra column holding an integer beyond 64 bits",
            "POST",
            "/v1/training-set",
            422,
            r"extra column 'fold' holds an integer that does not fit in 64 bits",
            json={"entities": [_row(known_clip, fold=10**30)]},
        ),
        RequestCase(
            "training-set extra column holding NaN",
            "POST",
            "/v1/training-set",
            422,
            r"extra column 'fold' holds NaN or infinity",
            content=json.dumps({"entities": [_row(known_clip, fold=float("nan"))]}).encode(),
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "JSON nested 100,000 levels deep",
            "POST",
            "/v1/search/vector",
            422,
            r"body: JSON nested too deeply to read",
            content=b'{"vector": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "JSON number of 5,000 digits",
            "POST",
            "/v1/search/vector",
            422,
            r"body: a number in the JSON has more than 4300 digits",
            content=b'{"vector": [0.1], "k": ' + b"9" * 5000 + b"}",
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "JSON body that is not UTF-8",
            "POST",
            "/v1/search/vector",
            422,
            r"body: not UTF-8 text",
            content=b'{"vector": "\xff"}',
            headers={"content-type": "application/json"},
        ),
        RequestCase(
            "decode bomb: FLAC declaring 8 channels x 655 kHz x 590 s",
            "POST",
            "/v1/search/audio",
            422,
            r"needs 3093\.3 million samples decoded .*the limit is",
            files={"file": ("bomb.flac", flac_bomb(), "audio/flac")},
        ),
    ]


def _row(clip_id: str, **extra: object) -> dict[str, object]:
    return {"clip_id": clip_id, "event_timestamp": "2030-01-01T00:00:00Z", **extra}


def _with_surrogate(body: object) -> bytes:
    """``body`` as JSON with every "SURROGATE" replaced by a lone UTF-16 surrogate escape
    (valid JSON syntax that no UTF-8 text can hold)."""
    return json.dumps(body).replace("SURROGATE", "\\ud800").encode()


def flac_bomb(seconds: float = 590.0, sample_rate: int = 655_350, channels: int = 8) -> bytes:
    """A 3 KB FLAC whose header declares ``channels`` x ``sample_rate`` x ``seconds`` (the
    review's decode bomb: 3 billion samples). Its frames hold 0.1 s of silence; the
    STREAMINFO total-samples field is set to the declared length, so a server that
    trusted it would decode for minutes."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((sample_rate // 10, channels), np.float32), sample_rate, format="FLAC")
    data = bytearray(buf.getvalue())
    # STREAMINFO starts at byte 8; its 64 bits at 18..26 end in the 36-bit sample count.
    (word,) = struct.unpack(">Q", data[18:26])
    total = round(seconds * sample_rate)
    data[18:26] = struct.pack(">Q", (word & ~((1 << 36) - 1)) | total)
    return bytes(data)


def write_observation(record: dict[str, object]) -> None:
    """Append one observed case to ``$HEAR_RELIABILITY_LOG`` (JSON lines) when it is set."""
    target = os.environ.get("HEAR_RELIABILITY_LOG")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
