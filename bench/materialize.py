"""Benchmark registration and materialisation; prints a table.

    .venv/bin/python bench/materialize.py [--recordings 200] [--seconds 20]

Both paths run in this process on the same registered clips, with the same stand-in
encoder and the same online store:

* ``HearEngine``: the project's batch engine (feature_repo/);
* Feast's stock path: an on-demand feature view with ``write_to_online_store=True`` over
  the registration view, materialised by ``feast materialize`` itself
  (bench/stock_odfv_repo/).

Time is split into audio I/O (reading each file to check its content hash, decoding
and cutting the registered windows), the encoder, and the rest ("store": table reads,
diffing, Parquet appends, online writes, index updates, Feast's own machinery). The
target is the store part at >= 5,000 clips/s, so that the encoder stays the bottleneck.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.console import Console
from rich.table import Table

import hear_features.audio as audio_module
import hear_features.featurestore.engine as engine_module
from hear_features.encoders import build_standin
from hear_features.featurestore import runtime
from hear_features.featurestore.registration import recordings_from_inputs, register
from hear_features.featurestore.repo import open_store, tables
from hear_features.featurestore.settings import EncoderSettings

warnings.filterwarnings("ignore")
console = Console()
ROOT = Path(__file__).resolve().parents[1]


class Timer:
    """Seconds spent inside wrapped calls and generators."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.items = 0

    def wrap_function(self, fn):  # type: ignore[no-untyped-def]
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
            self.items += len(result) if isinstance(result, np.ndarray) else 0
            return result

        return timed

    def wrap_generator(self, fn):  # type: ignore[no-untyped-def]
        def timed(*args, **kwargs) -> Iterator:  # type: ignore[no-untyped-def]
            iterator = fn(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    self.seconds += time.perf_counter() - start
                    return
                self.seconds += time.perf_counter() - start
                self.items += 1
                yield item

        return timed


def write_audio(folder: Path, recordings: int, seconds: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(seconds * 16_000) / 16_000
    for i in range(recordings):
        x = 0.05 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * (200 + 7 * i) * t)
        sf.write(folder / f"rec{i:04d}.wav", x.astype(np.float32), 16_000, subtype="PCM_16")


def make_repo(template: Path, target: Path, model: Path | None) -> Path:
    target.mkdir(parents=True)
    for path in template.glob("*.py"):
        shutil.copy2(path, target / path.name)
    text = (template / "feature_store.yaml").read_text()
    if model is not None:
        text = text.replace("model: google/hear", f"model: {model}")
    (target / "feature_store.yaml").write_text(text)
    return target


def run_path(
    name: str, repo: Path, audio: Path, settings: EncoderSettings, patch: str
) -> dict[str, float]:
    """Register, apply and materialise ``repo``; time each part."""
    store = open_store(repo)
    recordings, _ = recordings_from_inputs([str(audio)], {"label": "bench"})
    start = time.perf_counter()
    report = register(recordings, tables(store).registrations)
    register_s = time.perf_counter() - start

    # `feast apply` in a subprocess: it imports the repo's definitions as modules.
    subprocess.run(
        [str(Path(sys.executable).with_name("feast")), "apply"],
        cwd=repo,
        check=True,
        capture_output=True,
    )
    store = open_store(repo)
    runtime.activate(settings)
    encoder = runtime.encoder_for(settings)
    enc_timer, front_timer = Timer(), Timer()
    original_encode = encoder.encode
    encoder.encode = enc_timer.wrap_function(original_encode)  # type: ignore[method-assign]
    module = engine_module if patch == "engine" else audio_module
    original_windows = module.windows_at
    module.windows_at = front_timer.wrap_generator(original_windows)  # type: ignore[attr-defined]
    original_hash = engine_module.content_hash  # reading each audio file to check it is unchanged
    engine_module.content_hash = front_timer.wrap_function(original_hash)  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        store.materialize_incremental(end_date=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
        total = time.perf_counter() - start
    finally:
        encoder.encode = original_encode  # type: ignore[method-assign]
        module.windows_at = original_windows  # type: ignore[attr-defined]
        engine_module.content_hash = original_hash  # type: ignore[assignment]
    clips = report.added
    store_s = total - enc_timer.seconds - front_timer.seconds
    return {
        "name": name,
        "clips": clips,
        "register_s": register_s,
        "total_s": total,
        "front_s": front_timer.seconds,
        "encoder_s": enc_timer.seconds,
        "encoded": enc_timer.items,
        "store_s": store_s,
    }


def warm_up(folder: Path, settings: EncoderSettings) -> None:
    """Pay one-time costs (lazy imports of ibis/sqlglot, TF graph tracing) before timing."""
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), folder / "warm.parquet")
    ibis.read_parquet(str(folder / "warm.parquet")).to_pyarrow()
    runtime.encoder_for(settings).encode(np.zeros((64, 32_000), np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recordings", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=20, help="length of each recording")
    args = parser.parse_args()
    console.print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_audio(root / "audio", args.recordings, args.seconds)
        model = build_standin(root / "standin")
        settings = EncoderSettings(model=str(model))
        warm_up(root, settings)
        ours = run_path(
            "HearEngine (hear-features)",
            make_repo(ROOT / "feature_repo", root / "ours", model),
            root / "audio",
            settings,
            "engine",
        )
        stock = run_path(
            "Feast stock ODFV materialize",
            make_repo(ROOT / "bench" / "stock_odfv_repo", root / "stock", None),
            root / "audio",
            settings,
            "audio",
        )

    table = Table(
        title=f"{ours['clips']} clips from {args.recordings} x {args.seconds} s recordings, "
        "stand-in encoder"
    )
    for col in (
        "path",
        "register clips/s",
        "materialise s",
        "audio I/O s",
        "encoder s",
        "clips encoded",
        "store s",
        "store clips/s",
        "end-to-end clips/s",
    ):
        table.add_column(col, justify="right" if col != "path" else "left")
    for r in (ours, stock):
        table.add_row(
            r["name"],
            f"{r['clips'] / r['register_s']:,.0f}",
            f"{r['total_s']:.2f}",
            f"{r['front_s']:.2f}",
            f"{r['encoder_s']:.2f}",
            f"{r['encoded']:,}",
            f"{r['store_s']:.2f}",
            f"{r['clips'] / r['store_s']:,.0f}",
            f"{r['clips'] / r['total_s']:,.0f}",
        )
    console.print(table)
    console.print(
        f"ratio stock / HearEngine: materialise time {stock['total_s'] / ours['total_s']:.2f}x, "
        f"encoder work {stock['encoded'] / max(ours['encoded'], 1):.2f}x, "
        f"store time {stock['store_s'] / ours['store_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
