"""Benchmark ``hear-features probe`` at 100k clips x 512 on the shipped feature repo; prints tables.

    flock /work/wt/bench.lock .venv/bin/python bench/probe.py [--clips 100000] [--subjects 2000]

A copy of ``feature_repo/`` gets registration and embedding tables written directly
(synthetic vectors with a weak class signal, and 500 near-copies of clips filed under
another subject; no audio, so no encoder), ``feast apply``
runs with the stock CLI, and :func:`hear_features.probe.probe` runs on it exactly as the
command does: the point-in-time selection through Feast, the FAISS near-duplicate
audit, the confound check, 5-fold x 3 grouped cross-validation of the logistic probe
with its inner CV for C, the chance baseline, 1000 group-bootstrap resamples and the
report with its plots. Each stage is timed, and peak memory is recorded.

Two side measurements in the same run:

* the acoustic baseline needs the audio, which this table has none of: its cost per
  clip (read the registered window again + log-mel statistics) is measured on real
  WAV files and scaled to the clip count;
* the bootstrap: the vectorised weighted metrics against one scikit-learn
  ``roc_auc_score(sample_weight=...)`` call per resample (a few measured, scaled).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import soundfile as sf
from rich.console import Console
from rich.table import Table

from hear_features.cli.walkthrough import copy_repo
from hear_features.featurestore.tables import write_table
from hear_features.probe import ProbeConfig, probe
from hear_features.probe import metrics as probe_metrics
from hear_features.probe.acoustic import log_mel_features
from hear_features.schema import EMBEDDING_SCHEMA, REGISTRATION_SCHEMA
from hear_features.synthetic import cough

warnings.filterwarnings("ignore")
console = Console()
ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "bench/synthetic-vectors"


def write_store(
    repo: Path, clips: int, subjects: int, dim: int, planted: int, seed: int = 0
) -> set[tuple[str, str]]:
    """Registration and embedding rows for ``clips`` clips (2 windows per recording).

    The last ``planted`` clips are near-copies of earlier ones (cosine distance about
    0.004) filed under the next subject; returns those (original, copy) clip id pairs.
    """
    rng = np.random.default_rng(seed)
    base = clips - planted
    subject = np.sort(rng.integers(0, subjects, base))
    sick = rng.random(subjects) < 0.3
    centre = rng.standard_normal(dim).astype(np.float32)
    personal = rng.standard_normal((subjects, dim)).astype(np.float32)
    vectors = (
        0.05 * np.where(sick[subject], 1, -1)[:, None] * centre
        + 0.5 * personal[subject]
        + rng.standard_normal((base, dim)).astype(np.float32)
    ).astype(np.float32)
    originals = rng.choice(base, planted, replace=False)
    noise = 0.1 * rng.standard_normal((planted, dim)).astype(np.float32)
    vectors = np.vstack([vectors, vectors[originals] + noise])
    subject = np.concatenate([subject, (subject[originals] + 1) % subjects])
    label = np.where(sick[subject], "sick", "healthy")
    # Two windows per recording, recordings within one subject; each copy is a recording.
    first = np.searchsorted(subject[:base], subject[:base])
    within = np.arange(base) - first
    recording = np.concatenate([subject[:base] * 100_000 + within // 2, 10**9 + np.arange(planted)])
    window = np.concatenate([within % 2, np.zeros(planted, dtype=np.int64)])
    now = pd.Timestamp.now(tz="UTC").floor("us") - pd.Timedelta(days=1)
    clip_id = [f"{r:016x}-{w * 1800:08d}" for r, w in zip(recording, window, strict=True)]
    meta = {
        "clip_id": clip_id,
        "recording_id": [f"{r:016x}" for r in recording],
        "subject_id": [f"subject-{s}" for s in subject],
        "label": label,
        "dataset": np.where(subject % 3 == 0, "study-a", "study-b"),
        "device": np.where(subject % 2 == 0, "phone", "mic"),
        "audio_uri": [f"/nonexistent/{r}.wav" for r in recording],
        "offset_s": window * 1.8,
    }
    times = {
        "event_timestamp": pd.Series([now] * clips).astype("datetime64[us, UTC]"),
        "created": pd.Series([now] * clips).astype("datetime64[us, UTC]"),
    }
    reg = pd.DataFrame(
        {
            **meta,
            "duration_s": 3.6,
            "sample_rate": rng.choice([16_000, 44_100, 48_000], clips).astype(np.int32),
            "content_hash": [f"{r:064x}" for r in recording],
            **times,
        }
    )
    data = repo / "data"
    data.mkdir(exist_ok=True)
    write_table(
        data / "registrations.parquet",
        pa.Table.from_pandas(reg, preserve_index=False)
        .select(REGISTRATION_SCHEMA.names)
        .cast(REGISTRATION_SCHEMA),
    )
    emb = pa.table(
        {
            **{k: pa.array(v) for k, v in meta.items()},
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim).cast(
                pa.list_(pa.float32())
            ),
            "model_id": pa.array([MODEL_ID] * clips),
            **{k: pa.array(v) for k, v in times.items()},
        }
    )
    emb = emb.select(EMBEDDING_SCHEMA.names).cast(EMBEDDING_SCHEMA)
    write_table(data / "embeddings.parquet", emb)
    return {
        tuple(sorted((clip_id[o], clip_id[base + i]))) for i, o in enumerate(originals.tolist())
    }


def feast_apply(repo: Path) -> float:
    start = time.perf_counter()
    feast = Path(sys.executable).with_name("feast")
    proc = subprocess.run([str(feast), "apply"], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"feast apply failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def acoustic_cost(workdir: Path, recordings: int = 40, seconds: float = 20.0) -> tuple[int, float]:
    """(clips, seconds) of the acoustic baseline's features on real WAV files."""
    rng = np.random.default_rng(1)
    rows = []
    for r in range(recordings):
        path = workdir / f"r{r}.wav"
        parts = [cough(rng, 16_000, subject=r % 5, seconds=2.0) for _ in range(int(seconds / 2))]
        sf.write(path, np.concatenate(parts).astype(np.float32), 16_000)
        for w, offset in enumerate(np.arange(0, seconds - 2 + 1e-9, 1.8)):
            rows.append(
                {
                    "clip_id": f"{r}-{w}",
                    "unit_id": f"{r}-{w}",
                    "audio_uri": str(path),
                    "offset_s": float(offset),
                }
            )
    clips = pd.DataFrame(rows)
    log_mel_features(clips.head(4), clips["unit_id"].head(4).to_numpy())  # TensorFlow import, trace
    start = time.perf_counter()
    result = log_mel_features(clips, clips["unit_id"].to_numpy())
    assert result.features is not None, result.skipped
    return len(clips), time.perf_counter() - start


def bootstrap_ratio(n: int, resamples: int, measured: int = 5) -> tuple[float, float]:
    """Seconds for ``resamples`` group-bootstrap AUROCs: vectorised vs scikit-learn."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, n)
    score = rng.random(n) + 0.2 * y
    groups = np.arange(n) // 50
    draws = probe_metrics.group_draws(groups, resamples, 0)
    start = time.perf_counter()
    probe_metrics.estimate("auroc", "binary", y, score[None, :], np.zeros((1, n)), draws)
    vectorised = time.perf_counter() - start
    index, counts = draws
    start = time.perf_counter()
    for b in range(measured):
        roc_auc_score(y, score, sample_weight=counts[b][index])
    per_call = (time.perf_counter() - start) / measured
    return vectorised, per_call * resamples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--subjects", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--planted", type=int, default=500, help="near-copies to plant")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    try:
        repo = copy_repo(ROOT / "feature_repo", work / "feature_repo", "standin")
        start = time.perf_counter()
        planted = write_store(repo, args.clips, args.subjects, args.dim, args.planted)
        written = time.perf_counter() - start
        applied = feast_apply(repo)
        console.print(
            f"{args.clips:,} clips x {args.dim} of {args.subjects:,} subjects written in "
            f"{written:.1f} s; feast apply {applied:.1f} s"
        )
        config = ProbeConfig(
            target="label",
            folds=args.folds,
            repeats=args.repeats,
            bootstrap=args.bootstrap,
            acoustic=False,
        )
        start = time.perf_counter()
        began = time.perf_counter()
        report = probe(
            repo,
            config,
            work / "report",
            progress=lambda stage: console.print(
                f"[dim]{time.perf_counter() - began:7.1f} s  {stage}[/]", highlight=False
            ),
        )
        total = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        json_mib = (work / "report" / "report.json").stat().st_size / 2**20

        table = Table(
            title=f"hear-features probe, {args.clips:,} clips x {args.dim}, "
            f"{args.folds}-fold x {args.repeats}, {args.bootstrap} resamples "
            f"({os.cpu_count()} cores)",
            title_justify="left",
        )
        table.add_column("stage")
        table.add_column("s", justify="right")
        table.add_column("share", justify="right")
        for stage, seconds in report.timings.items():
            table.add_row(stage, f"{seconds:.1f}", f"{seconds / total:.0%}")
        table.add_row("[bold]total", f"[bold]{total:.1f}", "100%")
        console.print(table)
        auroc = report.estimate("embedding", "auroc")
        found = {tuple(sorted((p.unit_a, p.unit_b))) for p in report.duplicates.pairs}
        console.print(
            f"embedding AUROC {auroc.mean:.3f} [{auroc.ci_low:.3f}, {auroc.ci_high:.3f}], "
            f"chance {report.estimate('chance', 'auroc').mean:.3f}; planted near-copies "
            f"found {len(planted & found)}/{len(planted)}, pairs flagged "
            f"{len(report.duplicates.pairs)} ({report.duplicates.index}); chosen C "
            f"{sorted(set(c for r in report.results[0].chosen for c in r))}; "
            f"peak RSS {peak_mib:,.0f} MiB; report.json {json_mib:.1f} MiB"
        )

        clips, seconds = acoustic_cost(work)
        vectorised, sklearn_seconds = bootstrap_ratio(args.clips, args.bootstrap)
        side = Table(title="side measurements, same run", title_justify="left")
        side.add_column("what")
        side.add_column("measured", justify="right")
        side.add_column(f"at {args.clips:,} clips", justify="right")
        side.add_row(
            "acoustic baseline features (read window + log-mel statistics)",
            f"{clips / seconds:,.0f} clips/s ({clips} clips)",
            f"{args.clips / (clips / seconds):,.0f} s + its probe",
        )
        side.add_row(
            f"bootstrap AUROC, {args.bootstrap} resamples: vectorised",
            f"{vectorised:.1f} s",
            f"{vectorised:.1f} s",
        )
        side.add_row(
            f"bootstrap AUROC, {args.bootstrap} resamples: roc_auc_score per resample",
            f"{sklearn_seconds:.1f} s (scaled from 5)",
            f"{sklearn_seconds / vectorised:.0f}x slower",
        )
        console.print(side)
        console.print(f"run at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC", highlight=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
