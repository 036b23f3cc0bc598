"""Benchmark the audio front-end and the encoder; prints tables.

    .venv/bin/python bench/embed.py [--seconds 600] [--model standin]

1. Audio front-end (decode + downmix + resample to 16 kHz + 2 s windows), in seconds of
   audio per second of wall time, for WAV 44.1 kHz and MP3 44.1 kHz (plus FLAC and OGG),
   in one process on one core.
2. Encoder throughput in clips/s by batch size (the stand-in on CPU unless --model says
   otherwise; the real SavedModel on a GPU where one is available).
3. Peak resident memory for a one-hour recording: the front-end alone, and the whole
   `hear-features embed` command including TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.console import Console
from rich.table import Table

from hear_features.audio import iter_windows
from hear_features.encoders import HearEncoder

console = Console()


def write_test_audio(folder: Path, seconds: int) -> dict[str, Path]:
    """Noise-plus-tones recordings of ``seconds`` at 44.1 kHz in four formats."""
    sr = 44_100
    rng = np.random.default_rng(0)
    t = np.arange(sr * 10) / sr
    piece = (0.05 * rng.standard_normal(sr * 10) + 0.2 * np.sin(2 * np.pi * 440 * t)).astype(
        np.float32
    )
    stereo = np.stack([piece, piece[::-1]], axis=1)
    files = {
        "WAV 44.1 kHz stereo PCM16": (folder / "a.wav", "WAV", "PCM_16"),
        "MP3 44.1 kHz stereo": (folder / "a.mp3", "MP3", "MPEG_LAYER_III"),
        "FLAC 44.1 kHz stereo": (folder / "a.flac", "FLAC", "PCM_16"),
        "OGG/Vorbis 44.1 kHz stereo": (folder / "a.ogg", "OGG", "VORBIS"),
    }
    for path, fmt, subtype in files.values():
        with sf.SoundFile(path, "w", sr, 2, subtype, format=fmt) as f:
            for _ in range(seconds // 10):
                f.write(stereo)
    return {name: spec[0] for name, spec in files.items()}


def bench_front_end(files: dict[str, Path], seconds: int) -> Table:
    """Pinned to one CPU core, so the figure is per core whatever the machine."""
    table = Table(title=f"audio front-end, {seconds} s recordings, pinned to one core")
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    for col in ("input", "windows", "wall s", "x real time"):
        table.add_column(col, justify="right" if col != "input" else "left")
    for name, path in files.items():
        start = time.perf_counter()
        n = sum(1 for _ in iter_windows(path))
        wall = time.perf_counter() - start
        table.add_row(name, str(n), f"{wall:.2f}", f"{seconds / wall:,.0f}x")
    os.sched_setaffinity(0, cores)
    return table


def bench_encoder(model: str, batch_sizes: list[int], clips: int) -> Table:
    encoders = {b: HearEncoder.load(model, batch_size=b) for b in batch_sizes}
    first = next(iter(encoders.values()))
    table = Table(title=f"encoder {first.model_id} on {first.info.device}, by batch size")
    for col in ("batch size", "clips", "wall s", "clips/s", "audio x real time"):
        table.add_column(col, justify="right")
    x = (0.1 * np.random.default_rng(1).standard_normal((clips, 32_000))).astype(np.float32)
    for b, enc in encoders.items():
        enc.encode(x[: min(b, clips)])  # warm-up
        start = time.perf_counter()
        enc.encode(x)
        wall = time.perf_counter() - start
        table.add_row(
            str(b), str(clips), f"{wall:.2f}", f"{clips / wall:,.0f}", f"{2 * clips / wall:,.0f}x"
        )
    return table


PEAK = "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"


def peak_mib(code: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code + "\n" + PEAK], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def bench_memory(folder: Path, model: str) -> Table:
    path = folder / "hour.flac"
    rng = np.random.default_rng(2)
    with sf.SoundFile(path, "w", 44_100, 2, "PCM_16", format="FLAC") as f:
        for _ in range(60):
            f.write((0.05 * rng.standard_normal((60 * 44_100, 2))).astype(np.float32))
    out = folder / "hour.parquet"
    front = peak_mib(
        "from hear_features.audio import iter_windows\n"
        f"n = sum(1 for _ in iter_windows({str(path)!r}))"
    )
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
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--batch-sizes", default="1,8,32,64,128")
    args = parser.parse_args()
    console.print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        console.print(bench_front_end(write_test_audio(folder, args.seconds), args.seconds))
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        console.print(bench_encoder(args.model, sizes, args.clips))
        console.print(bench_memory(folder, args.model))


if __name__ == "__main__":
    main()
