"""Encoder throughput by batch size: the stand-in and a HeAR-sized ViT; prints tables.

    .venv/bin/python bench/encoder.py [--models standin,hear-sized] [--batch-sizes 1,4,16,32]
                                      [--device cpu|gpu|auto] [--min-seconds 20]

Each model is loaded through the project's own loader (``HearEncoder``), exactly as the
real HeAR SavedModel would be. ``hear-sized`` is a ViT with HeAR's shape (24 layers,
width 1024, 16 heads, 97 tokens, about 300M parameters and 60 GFLOP per clip) and
random weights, built once into the cache (about 1.2 GB, a minute); see
``hear_features.encoders.vit``. Any other value is a model spec (a directory, a hub id).

Every row encodes whole batches until at least ``--min-seconds`` have passed (after one
warm-up batch). Columns: wall clips/s, CPU seconds of this process per clip (on a
shared machine wall time depends on the neighbours; CPU time much less), and the
GFLOP/s that implies. The second table states what 100k and 1M clips would take at the
best batch size of each model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from hear_features.defaults import HEAR_SIZED
from hear_features.encoders import HearEncoder, VitShape
from hear_features.encoders.savedmodel import read_marker

console = Console()


@dataclass(frozen=True)
class Row:
    model_id: str
    device: str
    batch: int
    clips: int
    wall_s: float
    cpu_s: float
    gflop_per_clip: float | None

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s


def gflop_per_clip(encoder: HearEncoder) -> float | None:
    """The model's GFLOP per clip when it is one of our ViTs (unknown otherwise)."""
    marker = read_marker(encoder.path)
    if marker is None or not isinstance(marker.get("shape"), dict):
        return None
    return VitShape(**marker["shape"]).gflop_per_clip  # type: ignore[arg-type]


def measure(encoder: HearEncoder, batch: int, min_seconds: float, min_batches: int = 2) -> Row:
    """Encode ``batch``-sized batches until ``min_seconds`` and ``min_batches`` are reached."""
    clips = (0.1 * np.random.default_rng(batch).standard_normal((batch, 32_000))).astype(np.float32)
    encoder.encode(clips)  # warm-up: graph building, memory pools
    done, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while done < min_batches or time.perf_counter() - wall0 < min_seconds:
        encoder.encode(clips)
        done += 1
    return Row(
        encoder.model_id,
        encoder.info.device,
        batch,
        done * batch,
        time.perf_counter() - wall0,
        time.process_time() - cpu0,
        gflop_per_clip(encoder),
    )


def throughput_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title)
    for col in ("model", "device", "batch", "clips", "wall s", "clips/s", "CPU s/clip", "GFLOP/s"):
        table.add_column(col, justify="left" if col in ("model", "device") else "right")
    for r in rows:
        flops = "-" if r.gflop_per_clip is None else f"{r.gflop_per_clip * r.clips_per_s:,.0f}"
        table.add_row(
            r.model_id,
            r.device,
            str(r.batch),
            str(r.clips),
            f"{r.wall_s:.1f}",
            f"{r.clips_per_s:,.2f}",
            f"{r.cpu_s / r.clips:.3f}",
            flops,
        )
    return table


def duration(seconds: float) -> str:
    """A duration for people: 42 s, 3.5 min, 7.2 h, 12.3 days."""
    for unit, size in (("days", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


def projection_table(rows: list[Row], sizes: tuple[int, ...] = (100_000, 1_000_000)) -> Table:
    """What ``sizes`` clips would take at each model's best measured batch size."""
    table = Table(title="time to embed a collection, at the best batch size measured")
    for col in ("model", "device", "best batch", "clips/s", *(f"{n:,} clips" for n in sizes)):
        table.add_column(col, justify="left" if col in ("model", "device") else "right")
    for model in dict.fromkeys(r.model_id for r in rows):
        best = max((r for r in rows if r.model_id == model), key=lambda r: r.clips_per_s)
        table.add_row(
            model,
            best.device,
            str(best.batch),
            f"{best.clips_per_s:,.2f}",
            *(duration(n / best.clips_per_s) for n in sizes),
        )
    return table


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=f"standin,{HEAR_SIZED}")
    parser.add_argument("--batch-sizes", default="1,4,16,32")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--min-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    console.print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows: list[Row] = []
    for spec in args.models.split(","):
        start = time.perf_counter()
        # One model call per batch below: every batch is at most the encoder's batch size.
        encoder = HearEncoder.load(spec, batch_size=max(sizes), device=args.device)
        console.print(f"loaded {encoder.describe()} in {time.perf_counter() - start:.1f} s")
        for batch in sizes:
            rows.append(measure(encoder, batch, args.min_seconds))
            console.print(f"  batch {batch}: {rows[-1].clips_per_s:,.2f} clips/s")
        del encoder
    console.print(throughput_table(rows, "encoder throughput by batch size"))
    console.print(projection_table(rows))
    return rows


if __name__ == "__main__":
    main()
