"""Benchmark the audio front-end and the encoder; prints tables.

    .venv/bin/python bench/embed.py [--seconds 600] [--model standin]

1. Audio front-end (decode + downmix + resample to 16 kHz + 2 s windows), in seconds of
   audio per second of wall time, in one process pinned to one core, for every decoding
   path side by side: libsndfile (WAV, MP3, FLAC, Ogg/Vorbis, Ogg/Opus) and FFmpeg through
   PyAV (WebM/Opus, M4A/AAC, M4A/ALAC, AMR-NB, and the same WAV with its data size left
   at 0 as streaming recorders do), with the ratio to the plain WAV.
2. Peak resident memory for a one-hour recording: the front-end alone (FLAC through
   libsndfile, WebM/Opus through FFmpeg), and the whole `hear-features embed` command
   including TensorFlow.

Encoder throughput by batch size (the stand-in and a HeAR-sized model) is bench/encoder.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from hear_features.audio import iter_windows, probe
from hear_features.audio.writers import write_audio_blocks

console = Console()


#: name: (file name, codec override); every file holds the same stereo music-like piece.
FORMATS: dict[str, tuple[str, str | None]] = {
    "WAV 44.1 kHz stereo PCM16": ("a.wav", None),
    "WAV, data size 0 (streaming recorder)": ("unset.wav", None),
    "MP3 44.1 kHz stereo": ("a.mp3", None),
    "FLAC 44.1 kHz stereo": ("a.flac", None),
    "OGG/Vorbis 44.1 kHz stereo": ("a.ogg", None),
    "Ogg/Opus 48 kHz stereo (.opus)": ("a.opus", None),
    "WebM/Opus 48 kHz stereo (browser)": ("a.webm", None),
    "M4A/AAC 44.1 kHz stereo (phone)": ("aac.m4a", None),
    "M4A/ALAC 44.1 kHz stereo": ("alac.m4a", "alac"),
    "AMR-NB 8 kHz mono (voice recorder)": ("a.amr", None),
}


def piece_blocks(seconds: int, sr: int = 44_100) -> Iterator[np.ndarray]:
    """``seconds`` of noise plus a tone, stereo, in 10 s blocks."""
    rng = np.random.default_rng(0)
    t = np.arange(sr * 10) / sr
    piece = (0.05 * rng.standard_normal(sr * 10) + 0.2 * np.sin(2 * np.pi * 440 * t)).astype(
        np.float32
    )
    stereo = np.stack([piece, piece[::-1]], axis=1)
    for _ in range(seconds // 10):
        yield stereo


def write_test_audio(folder: Path, seconds: int) -> dict[str, Path]:
    """One ``seconds``-long recording per entry of :data:`FORMATS`, from 44.1 kHz stereo."""
    files = {}
    for name, (file_name, codec) in FORMATS.items():
        path = folder / file_name
        if file_name == "unset.wav":
            raw = bytearray((folder / "a.wav").read_bytes())
            at = raw.index(b"data")
            raw[at + 4 : at + 8] = bytes(4)  # data size 0: read to the end (FFmpeg)
            path.write_bytes(bytes(raw))
        else:
            write_audio_blocks(path, piece_blocks(seconds), 44_100, codec=codec)
        files[name] = path
    return files


def bench_front_end(files: dict[str, Path], seconds: int) -> Table:
    """Pinned to one CPU core, so the figure is per core whatever the machine."""
    table = Table(title=f"audio front-end, {seconds} s recordings, pinned to one core")
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    for col in ("input", "decoder", "windows", "wall s", "x real time", "vs WAV"):
        table.add_column(col, justify="right" if col not in ("input", "decoder") else "left")
    wav_speed = None
    for name, path in files.items():
        library = probe(path).library
        start = time.perf_counter()
        n = sum(1 for _ in iter_windows(path))
        wall = time.perf_counter() - start
        speed = seconds / wall
        wav_speed = wav_speed or speed
        table.add_row(
            name, library, str(n), f"{wall:.2f}", f"{speed:,.0f}x", f"{speed / wav_speed:.2f}"
        )
    os.sched_setaffinity(0, cores)
    return table


PEAK = "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"


def peak_mib(code: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code + "\n" + PEAK], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def hour_blocks(sr: int = 44_100) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(2)
    for _ in range(60):
        yield (0.05 * rng.standard_normal((60 * sr, 2))).astype(np.float32)


def front_end_peak(path: Path) -> float:
    return peak_mib(
        "from hear_features.audio import iter_windows\n"
        f"n = sum(1 for _ in iter_windows({str(path)!r}))"
    )


def bench_memory(folder: Path, model: str) -> Table:
    path = write_audio_blocks(folder / "hour.flac", hour_blocks(), 44_100, subtype="PCM_16")
    webm = write_audio_blocks(folder / "hour.webm", hour_blocks(48_000), 48_000)
    out = folder / "hour.parquet"
    front = front_end_peak(path)
    front_webm = front_end_peak(webm)
    argv = ["hear-features", "embed", str(path), "-o", str(out), "-m", model]
    start = time.perf_counter()
    whole = peak_mib(
        f"import sys; sys.argv = {argv!r}\nfrom hear_features.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code"
    )
    wall = time.perf_counter() - start
    table = Table(
        title="peak resident memory, one-hour FLAC 44.1 kHz stereo (16 kHz mono would be 220 MiB)"
    )
    for col in ("what", "peak RSS MiB", "wall s"):
        table.add_column(col, justify="right" if col != "what" else "left")
    table.add_row("audio front-end alone (decode, resample, window)", f"{front:.0f}", "")
    table.add_row(
        "audio front-end alone, one-hour WebM/Opus 48 kHz stereo (FFmpeg)",
        f"{front_webm:.0f}",
        "",
    )
    table.add_row(
        f"`hear-features embed` with {model} (TensorFlow included)", f"{whole:.0f}", f"{wall:.1f}"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=int, default=600, help="length of the front-end test recordings"
    )
    parser.add_argument("--model", default="standin")
    args = parser.parse_args()
    console.print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        console.print(bench_front_end(write_test_audio(folder, args.seconds), args.seconds))
        console.print(bench_memory(folder, args.model))


if __name__ == "__main__":
    main()
