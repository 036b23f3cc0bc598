"""Benchmark registration and materialisation; prints a table.

    .venv/bin/python bench/materialize.py [--recordings 200] [--seconds 20] [--workers 2]
                                          [--model standin|vit-small]

Every path runs from this process on the same registered clips, with the same encoder
and the same online store:

* ``HearEngine``: the project's batch engine (feature_repo/), ``executor: local``;
* ``HearEngine, executor: ray``: the same engine with the embedding step on Ray Data
  actors (``--workers`` of them, one CPU each) of a local Ray started by this script
  before timing, as a cluster started with ``ray start --head`` would be. Its time
  includes starting the actors and loading the model in each, which every run pays;
* Feast's stock path: an on-demand feature view with ``write_to_online_store=True`` over
  the registration view, materialised by ``feast materialize`` itself
  (bench/stock_odfv_repo/).

Time is split into audio I/O (reading each file to check its content hash, decoding
and cutting the registered windows), the encoder, and the rest ("store": table reads,
diffing, Parquet appends, online writes, index updates, Feast's own machinery). On Ray
the first two happen in the workers: their wall time together is the time the driver
waited for Ray. The target is the store part at >= 5,000 clips/s, so that the encoder
stays the bottleneck. ``--model vit-small`` uses a 4-layer ViT with HeAR's signature
(about 10x the stand-in's cost per clip), where spreading the encoder pays more.
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
import hear_features.featurestore.materialize as engine_module
from hear_features.encoders import build_standin
from hear_features.encoders.vit import VitShape, build_vit
from hear_features.featurestore import runtime
from hear_features.featurestore.config import EncoderSettings
from hear_features.featurestore.registration import recordings_from_inputs, register
from hear_features.featurestore.repo import open_store, tables

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


def make_repo(
    template: Path, target: Path, model: Path | None, engine: dict[str, object] | None = None
) -> Path:
    """A copy of ``template``; ``model`` and ``engine`` replace keys of its batch_engine."""
    import yaml

    target.mkdir(parents=True)
    for path in template.glob("*.py"):
        shutil.copy2(path, target / path.name)
    text = (template / "feature_store.yaml").read_text()
    if model is not None:
        text = text.replace("model: google/hear", f"model: {model}")
    if engine:
        config = yaml.safe_load(text)
        config["batch_engine"].update(engine)
        text = yaml.safe_dump(config, sort_keys=False)
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
    ray_timer, original_ray_call = Timer(), None
    if patch == "ray":
        from hear_features.featurestore.ray_executor import RayEmbedding

        original_ray_call = RayEmbedding.__call__
        RayEmbedding.__call__ = ray_timer.wrap_function(original_ray_call)  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        store.materialize_incremental(end_date=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
        total = time.perf_counter() - start
    finally:
        encoder.encode = original_encode  # type: ignore[method-assign]
        module.windows_at = original_windows  # type: ignore[attr-defined]
        engine_module.content_hash = original_hash  # type: ignore[assignment]
        if original_ray_call is not None:
            RayEmbedding.__call__ = original_ray_call  # type: ignore[method-assign]
    clips = report.added
    if patch == "ray":
        embedding = store._get_provider().batch_engine.embedder.embedding
        workers = len(embedding.last_run.clips_per_worker)
        first_answer = embedding.last_run.first_answer_s
        front_s, encoder_s, encoded = float("nan"), float("nan"), report.added
        waited = ray_timer.seconds
    else:
        workers, first_answer = 0, None
        front_s, encoder_s, encoded = front_timer.seconds, enc_timer.seconds, enc_timer.items
        waited = front_s + encoder_s
    return {
        "name": name,
        "clips": clips,
        "register_s": register_s,
        "total_s": total,
        "front_s": front_s,
        "encoder_s": encoder_s,
        "waited_s": waited,
        "encoded": encoded,
        "store_s": total - waited,
        "workers": workers,
        "first_answer_s": first_answer,
    }


def start_ray(workers: int) -> float:
    """A local Ray with a CPU per worker, started before timing; returns its start time."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - start


def build_model(kind: str, folder: Path) -> Path:
    if kind == "vit-small":
        return build_vit(folder, VitShape(layers=4, hidden=384, heads=6, mlp=1536))
    return build_standin(folder)


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
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (0: no Ray row)")
    parser.add_argument("--model", choices=("standin", "vit-small"), default="standin")
    args = parser.parse_args()
    console.print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_audio(root / "audio", args.recordings, args.seconds)
        model = build_model(args.model, root / "model")
        settings = EncoderSettings(model=str(model))
        warm_up(root, settings)
        rows.append(
            run_path(
                "HearEngine, executor: local",
                make_repo(ROOT / "feature_repo", root / "ours", model),
                root / "audio",
                settings,
                "engine",
            )
        )
        ray_start = None
        if args.workers:
            ray_start = start_ray(args.workers)
            engine = {"executor": "ray", "workers": args.workers, "cpus_per_worker": 1}
            rows.append(
                run_path(
                    f"HearEngine, executor: ray ({args.workers} workers)",
                    make_repo(ROOT / "feature_repo", root / "ray", model, engine),
                    root / "audio",
                    settings,
                    "ray",
                )
            )
        if args.model == "standin":  # the stock repository's transformation is the stand-in
            rows.append(
                run_path(
                    "Feast stock ODFV materialize",
                    make_repo(ROOT / "bench" / "stock_odfv_repo", root / "stock", None),
                    root / "audio",
                    settings,
                    "audio",
                )
            )

    ours = rows[0]
    table = Table(
        title=f"{ours['clips']} clips from {args.recordings} x {args.seconds} s recordings, "
        f"{args.model} encoder"
    )
    for col in (
        "path",
        "register clips/s",
        "materialise s",
        "audio I/O s",
        "encoder s",
        "decode+encode wall s",
        "clips encoded",
        "store s",
        "store clips/s",
        "end-to-end clips/s",
    ):
        table.add_column(col, justify="right" if col != "path" else "left")

    def seconds(value: float) -> str:
        return "in workers" if value != value else f"{value:.2f}"  # NaN: measured on Ray

    for r in rows:
        table.add_row(
            r["name"],
            f"{r['clips'] / r['register_s']:,.0f}",
            f"{r['total_s']:.2f}",
            seconds(r["front_s"]),
            seconds(r["encoder_s"]),
            f"{r['waited_s']:.2f}",
            f"{r['encoded']:,}",
            f"{r['store_s']:.2f}",
            f"{r['clips'] / r['store_s']:,.0f}",
            f"{r['clips'] / r['total_s']:,.0f}",
        )
    console.print(table)
    for r in rows[1:]:
        console.print(
            f"ratio {r['name']} / local: materialise time {r['total_s'] / ours['total_s']:.2f}x, "
            f"clips encoded {r['encoded'] / max(ours['encoded'], 1):.2f}x, "
            f"store time {r['store_s'] / ours['store_s']:.2f}x"
        )
    if ray_start is not None:
        ray_row = rows[1]
        console.print(
            f"Ray: local cluster started in {ray_start:.1f} s (before timing); "
            f"{ray_row['workers']} workers answered; the first answer came "
            f"{ray_row['first_answer_s']:.1f} s after the job started (starting the actors and "
            "loading the model in each)"
        )


if __name__ == "__main__":
    main()
