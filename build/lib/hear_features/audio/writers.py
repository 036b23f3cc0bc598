"""Write real audio files in every format we read, from float samples.

For the synthetic demo corpus, the test suite and the benchmarks: every claimed format is
exercised by files encoded here with the real encoders (libsndfile for WAV/AIFF/FLAC/
Ogg/MP3; FFmpeg through PyAV for Opus, AAC, ALAC and AMR-NB), never by fixtures checked
into the repository.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import av.audio.stream
import numpy as np
import soundfile as sf

#: Subtypes libsndfile writes for each of its endings.
_SNDFILE = {
    ".wav": ("WAV", "PCM_16"),
    ".aif": ("AIFF", "PCM_16"),
    ".aiff": ("AIFF", "PCM_16"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
    ".oga": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


@dataclass(frozen=True)
class FFmpegFormat:
    """How FFmpeg writes one ending: container, codec, and the rates the codec takes."""

    container: str
    codec: str
    rates: tuple[int, ...] = ()  # empty: any rate
    mono: bool = False  # the codec takes one channel only (channels are averaged)


_OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
_AAC_RATES = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 64_000)

FFMPEG_FORMATS: dict[str, FFmpegFormat] = {
    ".webm": FFmpegFormat("webm", "libopus", _OPUS_RATES),
    ".weba": FFmpegFormat("webm", "libopus", _OPUS_RATES),
    ".mka": FFmpegFormat("matroska", "libopus", _OPUS_RATES),
    ".opus": FFmpegFormat("opus", "libopus", _OPUS_RATES),
    ".m4a": FFmpegFormat("ipod", "aac", _AAC_RATES),
    ".mp4": FFmpegFormat("mp4", "aac", _AAC_RATES),
    ".aac": FFmpegFormat("adts", "aac", _AAC_RATES),
    ".amr": FFmpegFormat("amr", "libopencore_amrnb", (8_000,), mono=True),
    ".3gp": FFmpegFormat("3gp", "libopencore_amrnb", (8_000,), mono=True),
    ".caf": FFmpegFormat("caf", "alac"),
}


def write_audio(
    path: str | os.PathLike[str],
    samples: np.ndarray,
    sample_rate: int,
    *,
    codec: str | None = None,
    subtype: str | None = None,
) -> Path:
    """Encode ``samples`` (float, ``[n]`` or ``[n, channels]``, in [-1, 1]) by ``path``'s ending.

    ``codec`` overrides FFmpeg's codec (``"alac"`` for an Apple Lossless ``.m4a``),
    ``subtype`` libsndfile's. A codec that takes fixed rates (Opus, AAC, AMR-NB) gets the
    nearest one at or above ``sample_rate`` (AMR-NB: 8 kHz, mono), converted by FFmpeg.
    """
    return write_audio_blocks(path, [samples], sample_rate, codec=codec, subtype=subtype)


def write_audio_blocks(
    path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    *,
    codec: str | None = None,
    subtype: str | None = None,
) -> Path:
    """:func:`write_audio` for consecutive blocks (all ``[n]`` or all ``[n, channels]``),
    so long recordings are written without holding them in memory."""
    path = Path(path)
    ending = path.suffix.lower()
    if ending in _SNDFILE and codec is None:
        fmt, default = _SNDFILE[ending]
        with contextlib.ExitStack() as stack:
            out: sf.SoundFile | None = None
            for block in blocks:
                if out is None:
                    channels = 1 if block.ndim == 1 else block.shape[1]
                    out = stack.enter_context(
                        sf.SoundFile(
                            path, "w", sample_rate, channels, subtype or default, format=fmt
                        )
                    )
                out.write(block)
        return path
    if ending not in FFMPEG_FORMATS:
        raise ValueError(f"no writer for {ending!r} files")
    _write_ffmpeg(path, blocks, sample_rate, FFMPEG_FORMATS[ending], codec)
    return path


def _write_ffmpeg(
    path: Path,
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    spec: FFmpegFormat,
    codec: str | None,
) -> None:
    rate = sample_rate
    if spec.rates and codec is None:
        rate = next((r for r in spec.rates if r >= sample_rate), spec.rates[-1])
    with av.open(str(path), mode="w", format=spec.container) as container:
        stream: av.audio.stream.AudioStream | None = None
        converter: av.AudioResampler | None = None
        layout = "mono"
        for block in blocks:
            planar = np.asarray(block, np.float32)
            planar = planar[None, :] if planar.ndim == 1 else planar.T
            if spec.mono and planar.shape[0] > 1:
                planar = planar.mean(axis=0, keepdims=True)
            if stream is None:
                channels = planar.shape[0]
                layout = "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}c"
                added = container.add_stream(codec or spec.codec, rate=rate)
                assert isinstance(added, av.audio.stream.AudioStream)
                stream = added
                stream.layout = layout
                formats = stream.codec_context.codec.audio_formats
                converter = av.AudioResampler(
                    format=formats[0].name if formats else "fltp", layout=layout, rate=rate
                )
            assert converter is not None
            for at in range(0, planar.shape[1], 4096):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(planar[:, at : at + 4096]), format="fltp", layout=layout
                )
                frame.sample_rate = sample_rate
                for converted in converter.resample(frame):
                    container.mux(stream.encode(converted))
        if stream is None or converter is None:
            raise ValueError("no samples to write")
        for converted in converter.resample(None):
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
