"""Decode audio files into 16 kHz mono float32 blocks, without loading whole files.

libsndfile decodes WAV, AIFF, FLAC, Ogg and MP3, and FFmpeg (PyAV) everything else we
accept (see :mod:`hear_features.audio.readers` and :mod:`hear_features.audio.formats`).
Whichever decoded it, the audio then takes one path: channels averaged, checked for
NaN/inf and length, and resampled by soxr in a streaming fashion, so a one-hour
recording never sits in memory at once. Every problem with the input becomes an
:class:`~hear_features.errors.AudioError` that names the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from hear_features.audio.readers import (
    AudioInfo,
    AudioSource,
    DecodeError,
    Reader,
    open_reader,
    wav_data_extent,
)
from hear_features.errors import AudioError
from hear_features.schema import SAMPLE_RATE

__all__ = [
    "SAMPLE_RATE",
    "AudioInfo",
    "AudioLimits",
    "AudioSource",
    "iter_blocks",
    "probe",
    "read_all",
    "source_name",
]


@dataclass(frozen=True)
class AudioLimits:
    """What we accept before decoding anything; defaults suit research recordings."""

    max_duration_s: float = 2 * 3600.0
    min_duration_s: float = 0.1  # shorter holds nothing to embed: HeAR reads 2 s windows
    min_sample_rate: int = 4_000
    max_sample_rate: int = 768_000
    max_channels: int = 64
    max_decoded_samples: int | None = None
    """Budget on decoding work: sample rate x channels x seconds (None: no budget). Checked
    from the header before decoding, and again as samples arrive (for headers that state
    no length). A server sets it so that a small file cannot ask for minutes of work."""
    max_decode_s: float | None = None
    """Wall-clock seconds decoding one source may take (None: no limit)."""

    def __post_init__(self) -> None:
        if not self.max_duration_s > 0:
            raise ValueError("max_duration_s must be positive")
        if self.max_decoded_samples is not None and self.max_decoded_samples < 1:
            raise ValueError("max_decoded_samples must be positive")


def source_name(source: AudioSource) -> str:
    """A human-readable name for error messages (a path, or the upload's name)."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else "<audio buffer>"


def probe(source: AudioSource, limits: AudioLimits | None = None) -> AudioInfo:
    """Read and validate the header of ``source`` without decoding (much of) it."""
    with _checked_reader(source, limits or AudioLimits()) as reader:
        return reader.info


@contextlib.contextmanager
def _checked_reader(source: AudioSource, limits: AudioLimits) -> Iterator[Reader]:
    name = source_name(source)
    _check_not_empty(source, name)
    _check_wav_not_truncated(source, name)
    with open_reader(source, name) as reader:
        _check_header(reader.info, limits)
        yield reader


def iter_blocks(
    source: AudioSource,
    limits: AudioLimits | None = None,
    block_seconds: float = 8.0,
) -> Iterator[np.ndarray]:
    """Yield consecutive 1-D float32 blocks of ``source`` as 16 kHz mono.

    Channels are averaged, integer samples are scaled to [-1, 1), and any other rate is
    resampled with soxr at high quality. Raises :class:`AudioError` for unreadable,
    truncated, non-finite, too short or over-long audio, at the block where the problem
    shows (a header that states no length is checked as the samples arrive).
    """
    limits = limits or AudioLimits()
    with _checked_reader(source, limits) as reader:
        info = reader.info
        name = info.name
        resampler = (
            None
            if info.sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(
                info.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )
        )
        blocksize = max(1024, int(block_seconds * info.sample_rate))
        max_frames = int(limits.max_duration_s * info.sample_rate)
        budget = _budget_frames(info, limits)
        deadline = None if limits.max_decode_s is None else time.monotonic() + limits.max_decode_s
        frames_read = 0
        try:
            for block in reader.blocks(blocksize):
                if not np.isfinite(block).all():
                    bad = frames_read + int(np.argmin(np.isfinite(block).all(axis=1)))
                    at = bad / info.sample_rate
                    raise AudioError(
                        name, f"contains NaN or infinite samples (first at {at:.3f} s)"
                    )
                frames_read += len(block)
                if frames_read > max_frames:
                    raise AudioError(name, _too_long(frames_read / info.sample_rate, limits))
                if budget is not None and frames_read > budget:
                    raise AudioError(name, _over_budget(info, frames_read, limits))
                if deadline is not None and time.monotonic() > deadline:
                    raise AudioError(
                        name,
                        f"took more than {limits.max_decode_s:g} s to decode (stopped after "
                        f"{frames_read / info.sample_rate:.1f} s of audio)",
                    )
                mono = block.mean(axis=1, dtype=np.float32) if info.channels > 1 else block[:, 0]
                out = mono if resampler is None else resampler.resample_chunk(mono, last=False)
                if len(out):
                    yield np.ascontiguousarray(out, dtype=np.float32)
        except DecodeError as exc:
            at = max(frames_read, reader.position) / info.sample_rate
            raise AudioError(
                name, f"cannot be decoded after {at:.2f} s (truncated or corrupt?): {exc}"
            ) from exc
    if frames_read == 0:
        raise AudioError(name, "holds no audio samples")
    _check_complete(info, frames_read, limits)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield np.ascontiguousarray(tail, dtype=np.float32)


def read_all(source: AudioSource, limits: AudioLimits | None = None) -> np.ndarray:
    """Decode a whole (short) source to 16 kHz mono; for uploads and tests, not for long files."""
    blocks = list(iter_blocks(source, limits))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _check_complete(info: AudioInfo, frames_read: int, limits: AudioLimits) -> None:
    """After decoding: long enough, and as long as the header promised."""
    if frames_read / info.sample_rate < limits.min_duration_s:
        raise AudioError(info.name, _too_short(frames_read, info.sample_rate, limits))
    if info.frames <= 0 or frames_read >= info.frames:
        return
    missing = info.frames - frames_read
    inexact = info.library == "ffmpeg" or info.subtype.startswith("MPEG")
    if inexact and missing <= max(0.25 * info.sample_rate, 0.02 * info.frames):
        return  # codec delay and padding; MP3 lengths are estimates (0.2 s off seen in the wild)
    raise AudioError(
        info.name,
        f"is truncated: the header declares {info.frames} frames "
        f"but only {frames_read} could be read",
    )


def _check_not_empty(source: AudioSource, name: str) -> None:
    if isinstance(source, str | os.PathLike):
        try:
            st = os.stat(source)
        except FileNotFoundError:
            problem = "is a broken symbolic link" if Path(source).is_symlink() else "no such file"
            raise AudioError(name, problem) from None
        except OSError as exc:  # permissions, symbolic link loops (ELOOP)
            raise AudioError(name, f"cannot be read: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise AudioError(name, "is not a regular file")
        size = st.st_size
    else:
        size = source.seek(0, io.SEEK_END)
        source.seek(0)
    if size == 0:
        raise AudioError(name, "is empty (0 bytes)")


def _check_header(info: AudioInfo, limits: AudioLimits) -> None:
    if info.channels < 1:
        raise AudioError(info.name, "has no audio channels")
    if info.channels > limits.max_channels:
        raise AudioError(
            info.name, f"has {info.channels} channels; at most {limits.max_channels} are accepted"
        )
    if not limits.min_sample_rate <= info.sample_rate <= limits.max_sample_rate:
        raise AudioError(
            info.name,
            f"has an unsupported sample rate of {info.sample_rate} Hz "
            f"(accepted: {limits.min_sample_rate}-{limits.max_sample_rate} Hz)",
        )
    budget = _budget_frames(info, limits)
    if budget is not None and info.frames > budget:  # before the length: it says more
        raise AudioError(info.name, _over_budget(info, info.frames, limits))
    if info.duration_s > limits.max_duration_s:
        raise AudioError(info.name, _too_long(info.duration_s, limits))
    if info.frames > 0 and info.duration_s < limits.min_duration_s:
        raise AudioError(info.name, _too_short(info.frames, info.sample_rate, limits))


def _budget_frames(info: AudioInfo, limits: AudioLimits) -> int | None:
    """Frames of ``info`` that the decoding budget allows (None: no budget)."""
    if limits.max_decoded_samples is None:
        return None
    return limits.max_decoded_samples // max(1, info.channels)


def _over_budget(info: AudioInfo, frames: int, limits: AudioLimits) -> str:
    asked = frames * info.channels
    budget = limits.max_decoded_samples or 0
    return (
        f"needs {asked / 1e6:.1f} million samples decoded ({info.sample_rate} Hz x "
        f"{info.channels} channel(s) x {frames / info.sample_rate:.1f} s); the limit is "
        f"{budget / 1e6:.1f} million ({budget / 96_000:.0f} s of 48 kHz stereo): resample "
        "it to 16 kHz mono or send a shorter excerpt"
    )


def _too_long(duration_s: float, limits: AudioLimits) -> str:
    return f"is {duration_s:.0f} s long; the limit is {limits.max_duration_s:.0f} s"


def _too_short(frames: int, sample_rate: int, limits: AudioLimits) -> str:
    return (
        f"is too short: {frames} sample(s), {frames / sample_rate:.4f} s; "
        f"at least {limits.min_duration_s:g} s is needed"
    )


def _check_wav_not_truncated(source: AudioSource, name: str) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; we refuse it instead.

    Placeholder sizes (0, 0x7FFFFFFF, 0xFFFFFFFF: "unknown, read to the end") are not
    a cut-off chunk, and such files are read to their end.
    """
    declared = wav_data_extent(source)
    if declared is None:
        return
    end, size = declared
    if end > size:
        raise AudioError(
            name, f"is truncated: its data chunk needs {end} bytes but the file has {size}"
        )
