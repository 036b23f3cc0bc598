"""Benchmark ``hear-features forget`` on a full repository; prints a table.

    .venv/bin/python bench/forget.py [--size 100000] [--subjects 1000] [--repeats 3]

A copy of feature_repo/ gets N registered clips (10 per recording, ``--subjects``
subjects) and their 512-d vectors in both Parquet tables, written as ``register`` and
the batch engine write them; the real ``feast materialize-incremental`` then fills both
online views and saves the FAISS index (nothing to embed: every clip has its vector, so
no audio is read). Then, ``--repeats`` times, one subject is forgotten:

* **CLI**: ``hear-features forget --subject S --yes`` in a fresh process, wall time
  from start to exit (Python, Feast and pyarrow imports included);
* the steps inside it, from the command's own timings (``--timings``): locks, plan,
  online delete, then side by side the index files, the Parquet rewrites and the
  database rewrite (VACUUM), then the records (tombstones, strays, journal).

After each forget the benchmark checks that the subject's clips are gone from both
tables and from the online store. Target on 2 cores: <= 10 s for one subject of 100k
clips.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from hear_features.embeddings_file import embedding_column
from hear_features.encoders import build_standin, resolve_model
from hear_features.schema import EMBEDDING_SCHEMA, REGISTRATION_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' support code
from tests.support.erasure import forget_command  # noqa: E402
from tests.support.vectors import clustered_vectors  # noqa: E402

console = Console()
CLIPS_PER_RECORDING = 10
LABELS = ("cough", "breath", "speech")
STEPS = ("locks", "resume", "plan", "online", "indexes", "tables", "database", "records")


def build(root: Path, n: int, subjects: int) -> tuple[Path, float]:
    """A repository with ``n`` registered, embedded and materialised clips, and the wall
    seconds of its ``feast materialize-incremental`` (what the manual way of deleting,
    rewrite the tables and re-materialise everything, costs at the least)."""
    model = build_standin(root / "standin", seed=0)
    repo = root / "repo"
    (repo / "data").mkdir(parents=True)
    shutil.copy2(ROOT / "feature_repo" / "definitions.py", repo / "definitions.py")
    text = (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(text.replace("model: google/hear", f"model: {model}"))
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    i = np.arange(n)
    recording = i // CLIPS_PER_RECORDING
    recording_ids = [f"{r:016x}" for r in recording]
    columns = {
        "clip_id": [
            f"{r}-{(k % CLIPS_PER_RECORDING) * 1800:08d}" for k, r in enumerate(recording_ids)
        ],
        "recording_id": recording_ids,
        "subject_id": [f"subject-{r % subjects}" for r in recording],
        "label": [LABELS[r % 3] for r in recording],
        "dataset": ["bench"] * n,
        "device": ["synthetic"] * n,
        "audio_uri": [f"/data/bench/recording-{r}.wav" for r in recording],
        "offset_s": ((i % CLIPS_PER_RECORDING) * 1.8).tolist(),
    }
    stamps = {
        "event_timestamp": pa.array([then] * n, pa.timestamp("us", tz="UTC")),
        "created": pa.array([then] * n, pa.timestamp("us", tz="UTC")),
    }
    registrations = {
        **columns,
        "duration_s": [2.0] * n,
        "sample_rate": pa.array([16_000] * n, pa.int32()),
        "content_hash": [f"{r}{'0' * 48}" for r in recording_ids],
        **stamps,
    }
    pq.write_table(
        pa.table(registrations, REGISTRATION_SCHEMA), repo / "data" / "registrations.parquet"
    )
    model_id = resolve_model(str(model)).model_id
    embeddings = {
        **columns,
        "embedding": embedding_column(clustered_vectors(n, 512, seed=n)),
        "model_id": [model_id] * n,
        **stamps,
    }
    pq.write_table(pa.table(embeddings, EMBEDDING_SCHEMA), repo / "data" / "embeddings.parquet")
    feast = str(Path(sys.executable).with_name("feast"))
    subprocess.run([feast, "apply"], cwd=repo, check=True, capture_output=True)
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    start = time.perf_counter()
    subprocess.run(
        [feast, "materialize-incremental", end], cwd=repo, check=True, capture_output=True
    )
    return repo, time.perf_counter() - start


def remaining(repo: Path, subject: str) -> int:
    """Rows of ``subject`` left in the tables and the online store (must be 0)."""
    left = 0
    for name in ("registrations", "embeddings"):
        t = pq.read_table(repo / "data" / f"{name}.parquet", columns=["subject_id"])
        left += t.filter(pa.compute.equal(t["subject_id"], subject)).num_rows
    with sqlite3.connect(repo / "data" / "online.db") as conn:
        left += conn.execute(
            "SELECT COUNT(*) FROM hear_features_cough_embeddings__attrs "
            "WHERE name = 'subject_id' AND text = ?",
            (subject,),
        ).fetchone()[0]
    return int(left)


def forget(repo: Path, subject: str) -> tuple[float, float, dict[str, float], int]:
    """Wall seconds, CPU seconds (user + system), seconds per step, clips removed."""
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(
        [*forget_command(repo, "--subject", subject), "--timings"],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"forget failed:\n{proc.stdout}\n{proc.stderr}")
    timings = json.loads(proc.stdout.strip().splitlines()[-1])
    return wall, cpu, timings["seconds"], timings["clips"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--subjects", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-forget-") as tmp:
        start = time.perf_counter()
        repo, materialise_s = build(Path(tmp), args.size, args.subjects)
        db_mib = (repo / "data" / "online.db").stat().st_size / 2**20
        console.print(
            f"built and materialised {args.size:,} clips in {time.perf_counter() - start:.0f} s "
            f"(online.db {db_mib:.0f} MiB); feast materialize-incremental alone: "
            f"{materialise_s:.1f} s"
        )
        table = Table(title=f"hear-features forget --subject S, {args.size:,} clips")
        for column in ("subject", "clips", "CLI wall s", "CLI CPU s", *STEPS, "left"):
            table.add_column(column, justify="right")
        walls = []
        for k in range(args.repeats):
            subject = f"subject-{(k * 7) % args.subjects}"
            wall, cpu, seconds, clips = forget(repo, subject)
            walls.append(wall)
            table.add_row(
                subject,
                str(clips),
                f"{wall:.2f}",
                f"{cpu:.2f}",
                *(f"{seconds.get(s, 0.0):.2f}" for s in STEPS),
                str(remaining(repo, subject)),
            )
        console.print(table)
        console.print(
            f"{os.cpu_count()} CPUs; load average over the last 15 min: "
            f"{os.getloadavg()[2]:.1f} (other processes share the CPUs: wall times grow with it)"
        )
        median = statistics.median(walls)
        console.print(f"median CLI wall time: {median:.2f} s (target <= 10 s)")
        console.print(
            f"the manual way's re-materialisation alone ({materialise_s:.1f} s) takes "
            f"{materialise_s / median:.1f}x as long as one forget"
        )


if __name__ == "__main__":
    main()
