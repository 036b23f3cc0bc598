"""Decode audio files into 16 kHz mono float32 blocks, without loading whole files.

soundfile (libsndfile) decodes WAV, FLAC, OGG/Vorbis and MP3; soxr resamples in a
streaming fashion so a one-hour recording never sits in memory at once. Every problem
with the input becomes an :class:`~hear_features.errors.AudioError` that names the file.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from hear_features.errors import AudioError

#: HeAR's input rate.
SAMPLE_RATE = 16_000

AudioSource = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class AudioLimits:
    """What we accept before decoding anything; defaults suit research recordings."""

    max_duration_s: float = 2 * 3600.0
    min_duration_s: float = 0.1  # shorter holds nothing to embed: HeAR reads 2 s windows
    min_sample_rate: int = 4_000
    max_sample_rate: int = 768_000
    max_channels: int = 64

    def __post_init__(self) -> None:
        if not self.max_duration_s > 0:
            raise ValueError("max_duration_s must be positive")


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says, checked against :class:`AudioLimits`."""

    name: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def source_name(source: AudioSource) -> str:
    """A human-readable name for error messages (a path, or the upload's name)."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<audio buffer>"))


def probe(source: AudioSource, limits: AudioLimits | None = None) -> AudioInfo:
    """Read and validate the header of ``source`` without decoding samples."""
    limits = limits or AudioLimits()
    name = source_name(source)
    _check_not_empty(source, name)
    try:
        with _open(source) as f:
            info = AudioInfo(name, f.samplerate, f.channels, f.frames, f.format, f.subtype)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(name, f"not a readable audio file (WAV, FLAC, OGG or MP3): {exc}") from exc
    finally:
        _rewind(source)
    _check_header(info, limits)
    _check_wav_not_truncated(source, name)
    return info


def iter_blocks(
    source: AudioSource,
    limits: AudioLimits | None = None,
    block_seconds: float = 8.0,
) -> Iterator[np.ndarray]:
    """Yield consecutive 1-D float32 blocks of ``source`` as 16 kHz mono.

    Channels are averaged, integer samples are scaled to [-1, 1), and any other rate is
    resampled with soxr at high quality. Raises :class:`AudioError` for unreadable,
    truncated, non-finite or over-long audio, at the block where the problem shows.
    """
    limits = limits or AudioLimits()
    info = probe(source, limits)
    name = info.name
    resampler = (
        None
        if info.sample_rate == SAMPLE_RATE
        else soxr.ResampleStream(info.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    )
    blocksize = max(1024, int(block_seconds * info.sample_rate))
    max_frames = int(limits.max_duration_s * info.sample_rate)
    frames_read = 0
    try:
        with _open(source) as f:
            for block in f.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    bad = frames_read + int(np.argmin(np.isfinite(block).all(axis=1)))
                    at = bad / info.sample_rate
                    raise AudioError(
                        name, f"contains NaN or infinite samples (first at {at:.3f} s)"
                    )
                frames_read += len(block)
                if frames_read > max_frames:
                    raise AudioError(name, _too_long(frames_read / info.sample_rate, limits))
                mono = block.mean(axis=1, dtype=np.float32) if info.channels > 1 else block[:, 0]
                out = mono if resampler is None else resampler.resample_chunk(mono, last=False)
                if len(out):
                    yield np.ascontiguousarray(out, dtype=np.float32)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        at = frames_read / info.sample_rate
        raise AudioError(
            name, f"cannot be decoded after {at:.2f} s (truncated or corrupt?): {exc}"
        ) from exc
    finally:
        _rewind(source)
    if frames_read == 0:
        raise AudioError(name, "holds no audio samples")
    if info.frames > 0 and frames_read < info.frames and info.format != "MPEG":
        raise AudioError(
            name,
            f"is truncated: the header declares {info.frames} frames "
            f"but only {frames_read} could be read",
        )
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield np.ascontiguousarray(tail, dtype=np.float32)


def read_all(source: AudioSource, limits: AudioLimits | None = None) -> np.ndarray:
    """Decode a whole (short) source to 16 kHz mono; for uploads and tests, not for long files."""
    blocks = list(iter_blocks(source, limits))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _open(source: AudioSource) -> sf.SoundFile:
    return sf.SoundFile(source if not isinstance(source, os.PathLike) else os.fspath(source))


def _rewind(source: AudioSource) -> None:
    if not isinstance(source, str | os.PathLike) and source.seekable():
        source.seek(0)


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
    if info.duration_s > limits.max_duration_s:
        raise AudioError(info.name, _too_long(info.duration_s, limits))
    if info.frames > 0 and info.duration_s < limits.min_duration_s:
        raise AudioError(
            info.name,
            f"is too short: {info.frames} sample(s), {info.duration_s:.4f} s; "
            f"at least {limits.min_duration_s:g} s is needed",
        )


def _too_long(duration_s: float, limits: AudioLimits) -> str:
    return f"is {duration_s:.0f} s long; the limit is {limits.max_duration_s:.0f} s"


def _check_wav_not_truncated(source: AudioSource, name: str) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; we refuse it instead."""
    declared = _wav_data_extent(source)
    if declared is None:
        return
    end, size = declared
    if end > size:
        raise AudioError(
            name, f"is truncated: its data chunk needs {end} bytes but the file has {size}"
        )


def _wav_data_extent(source: AudioSource) -> tuple[int, int] | None:
    """Return (end offset of the declared data chunk, file size) for RIFF/WAVE, else None."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return _riff_data_extent(f)
    try:
        return _riff_data_extent(source)
    finally:
        source.seek(0)


def _riff_data_extent(f: BinaryIO) -> tuple[int, int] | None:
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
        if chunk_id == b"data":
            if chunk_size in (0, 0xFFFFFFFF):  # streaming writers leave it unset
                return None
            return pos + 8 + chunk_size, size
        pos += 8 + chunk_size + (chunk_size & 1)
    return None
