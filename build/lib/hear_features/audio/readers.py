"""Two decoders behind one interface: libsndfile first, FFmpeg (PyAV) for the rest.

libsndfile (``soundfile``) is fast and exact for the formats researchers archive in
(WAV, FLAC, Ogg, MP3); FFmpeg, whose libraries PyAV's wheels bundle, reads what phones
and browsers record (WebM/Opus, M4A/AAC and ALAC, AMR) and WAVs whose size fields were
never filled in. :func:`open_reader` asks libsndfile first and FFmpeg only when
libsndfile cannot open the file, so a file both can read always decodes the same way.

A reader yields float32 blocks of shape ``(frames, channels)`` at the file's own rate;
downmixing and resampling happen once, in :mod:`hear_features.audio.decode`, so both
decoders give identical 16 kHz samples for the same audio. Blocks are bounded in size
(the FFmpeg reader converts one codec frame at a time), so memory does not grow with the
length of the recording.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

import numpy as np
import soundfile as sf

from hear_features.errors import AudioError

if TYPE_CHECKING:
    import av

AudioSource = str | os.PathLike[str] | BinaryIO

#: RIFF size fields that streaming writers leave behind when they never go back to fill
#: them in (phone recorders, crashed writers): "size unknown, read to the end".
WAV_SIZE_PLACEHOLDERS = frozenset({0, 0x7FFFFFFF, 0xFFFFFFFF})

#: FFmpeg containers whose header gives an exact duration (sample tables, the last Ogg
#: granule, a WAV data size); for the others (ADTS AAC, AMR, MP3) FFmpeg estimates it
#: from the bit rate, which is not good enough to call a file truncated or too long.
_EXACT_DURATION = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "caf", "ogg", "wav", "flac", "aiff"})


@dataclass(frozen=True)
class AudioInfo:
    """What the header says (and, for FFmpeg, the first decoded frame)."""

    name: str
    sample_rate: int
    channels: int
    frames: int  # 0 when the header does not say (streamed WebM, raw AAC, AMR)
    format: str
    subtype: str
    library: str = "libsndfile"  # or "ffmpeg"

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


class Reader(Protocol):
    info: AudioInfo

    def blocks(self, blocksize: int) -> Iterator[np.ndarray]:
        """float32 ``(frames, channels)`` blocks of at most about ``blocksize`` frames."""
        ...

    @property
    def position(self) -> int:
        """Frames decoded so far (where a :class:`DecodeError` happened)."""
        ...


class DecodeError(Exception):
    """A decoder failed mid-stream; :mod:`decode` adds the file name and position."""


class _CannotOpen(Exception):
    """FFmpeg cannot open the file either (the message says why)."""


def reason(exc: BaseException) -> str:
    """An error's text without the file object's ``repr`` that libraries put in it
    (``Error opening <_io.BytesIO object at 0x...>``): the caller names the file."""
    if isinstance(exc, sf.LibsndfileError):
        text = exc.error_string.rstrip(".")
        # libsndfile says this of any file it cannot make sense of; ours exists (checked).
        return "cannot open it" if text.startswith("File does not exist") else text
    av = sys.modules.get("av")  # imported only once a file needed FFmpeg
    if av is not None and isinstance(exc, av.error.FFmpegError):
        return str(exc.strerror or type(exc).__name__)
    return str(exc)


@contextlib.contextmanager
def open_reader(source: AudioSource, name: str) -> Iterator[Reader]:
    """A reader for ``source``, or :class:`AudioError` when neither library can open it."""
    reader: _SndfileReader | _FFmpegReader
    if _wav_size_unset_but_has_data(source):
        # libsndfile takes a data size of 0 literally (no samples); FFmpeg reads to the end.
        reader = _FFmpegReader(source, name)
    else:
        try:
            reader = _SndfileReader(source, name)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as sf_exc:
            _rewind(source)
            try:
                reader = _FFmpegReader(source, name)
            except _CannotOpen as av_exc:
                raise AudioError(
                    name,
                    f"not a readable audio file: {reason(sf_exc)} (libsndfile); {av_exc} (FFmpeg)",
                ) from av_exc.__cause__
    try:
        yield reader
    finally:
        reader.close()
        _rewind(source)


def _rewind(source: AudioSource) -> None:
    if not isinstance(source, str | os.PathLike) and source.seekable():
        source.seek(0)


class _SndfileReader:
    def __init__(self, source: AudioSource, name: str) -> None:
        self._file = sf.SoundFile(os.fspath(source) if isinstance(source, os.PathLike) else source)
        f = self._file
        self.info = AudioInfo(name, f.samplerate, f.channels, f.frames, f.format, f.subtype)

    def blocks(self, blocksize: int) -> Iterator[np.ndarray]:
        # Not SoundFile.blocks(): it sizes its buffers by the header's frame count and
        # hands out the unfilled rest of the buffer when the decoder delivers fewer frames
        # (an MP3 whose length header overstates it, a cut file): zeros or stale memory
        # passed off as audio. read() returns what was really decoded.
        try:
            while True:
                block = self._file.read(blocksize, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise DecodeError(reason(exc)) from exc

    @property
    def position(self) -> int:
        try:
            return int(self._file.tell())
        except (sf.LibsndfileError, RuntimeError, ValueError):
            return 0

    def close(self) -> None:
        self._file.close()


class _FFmpegReader:
    """Demux and decode the first audio stream with PyAV, one codec frame at a time.

    ``av.AudioResampler(format="flt")`` only converts each frame's sample format to
    packed float32 (rate and layout stay as decoded); the first frame is decoded while
    opening, because HE-AAC and some WebM files state a different rate or channel count
    in their header than they decode to.
    """

    def __init__(self, source: AudioSource, name: str) -> None:
        import av  # here, not at the top: its import costs 0.7 s and 16 MB

        self._av = av
        self._name = name
        target = os.fspath(source) if isinstance(source, str | os.PathLike) else source
        try:
            self._container = av.open(target, mode="r", metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise _CannotOpen(reason(exc)) from exc
        try:
            if not self._container.streams.audio:
                kinds = sorted({str(s.type) for s in self._container.streams}) or ["no"]
                raise AudioError(
                    name,
                    f"not a readable audio file: FFmpeg reads it as "
                    f"{self._container.format.name} with {'/'.join(kinds)} streams "
                    "but no audio stream",
                )
            self._stream = self._container.streams.audio[0]
            self._frames = self._container.decode(self._stream)
            self._converter = av.AudioResampler(format="flt")
            try:
                first = next(self._frames, None)
            except (av.error.FFmpegError, ValueError) as exc:
                raise AudioError(name, f"not a readable audio file: {reason(exc)}") from exc
            if first is None:
                raise AudioError(name, "holds no audio samples")
            self._first: av.AudioFrame = first
            self.position = 0
        except BaseException:
            self._container.close()
            raise
        self.info = self._describe()

    def _describe(self) -> AudioInfo:
        stream, first = self._stream, self._first
        rate, channels = first.sample_rate, first.layout.nb_channels
        frames = 0
        fmt = self._container.format.name
        if fmt in _EXACT_DURATION and stream.duration and stream.time_base and rate:
            frames = round(float(stream.duration * stream.time_base) * rate)
        codec = stream.codec_context.name
        return AudioInfo(self._name, rate, channels, frames, fmt, codec, "ffmpeg")

    def blocks(self, blocksize: int) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        held = 0
        rate, channels = self.info.sample_rate, self.info.channels
        try:
            for frame in _chain(self._first, self._frames):
                if frame.sample_rate != rate or frame.layout.nb_channels != channels:
                    raise DecodeError(
                        f"the stream changes from {rate} Hz, {channels} channel(s) to "
                        f"{frame.sample_rate} Hz, {frame.layout.nb_channels} mid-way"
                    )
                for converted in self._converter.resample(frame):
                    pending.append(converted.to_ndarray().reshape(-1, channels))
                    held += converted.samples
                    self.position += converted.samples
                if held >= blocksize:
                    yield np.concatenate(pending)
                    pending, held = [], 0
            for converted in self._converter.resample(None):
                pending.append(converted.to_ndarray().reshape(-1, channels))
        except (self._av.error.FFmpegError, ValueError) as exc:
            raise DecodeError(reason(exc)) from exc
        if pending:
            yield np.concatenate(pending)

    def close(self) -> None:
        self._container.close()


def _chain(first: av.AudioFrame, rest: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    yield first
    yield from rest


# ---- WAV size fields ------------------------------------------------------------------


def wav_data_extent(source: AudioSource) -> tuple[int, int] | None:
    """(end offset its data chunk declares, file size) for a RIFF/WAVE file with a real
    data size; None for other files and for placeholder sizes (read to the end)."""
    found = _wav_data_chunk(source)
    if found is None:
        return None
    offset, declared, size = found
    if declared in WAV_SIZE_PLACEHOLDERS:
        return None
    return offset + declared, size


def _wav_size_unset_but_has_data(source: AudioSource) -> bool:
    found = _wav_data_chunk(source)
    return found is not None and found[1] == 0 and found[2] > found[0]


def _wav_data_chunk(source: AudioSource) -> tuple[int, int, int] | None:
    """(offset of the data chunk's first sample byte, its declared size, file size)."""
    try:
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as f:
                return _scan_riff(f)
        try:
            return _scan_riff(source)
        finally:
            source.seek(0)
    except OSError:
        return None  # opening it properly will say what is wrong


def _scan_riff(f: BinaryIO) -> tuple[int, int, int] | None:
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
            return pos + 8, chunk_size, size
        pos += 8 + chunk_size + (chunk_size & 1)
    return None
